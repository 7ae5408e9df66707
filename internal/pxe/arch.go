package pxe

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Arch is a DHCP client's system architecture (option 93, RFC 4578 and IANA's "Processor Architecture
// Types"): it says which iPXE binary the firmware can run.
type Arch = iana.Arch

// The architectures nix8s knows a boot file for. 7 and 9 are both taken as x86-64 UEFI: RFC 4578 named 7
// "EFI BC" and 9 "EFI x86-64", its erratum and IANA's registry swap them (7 x86-64, 9 EFI byte code); EDK2's
// x86-64 PXE sends 7, some older firmware 9, and no firmware boots byte code.
const (
	ArchBIOS      Arch = iana.INTEL_X86PC     // 0: x86 BIOS PXE
	ArchIA32      Arch = iana.EFI_IA32        // 6: 32-bit x86 UEFI PXE
	ArchX64       Arch = iana.EFI_X86_64      // 7: x86-64 UEFI PXE
	ArchX64Alt    Arch = iana.EFI_BC          // 9: x86-64 UEFI PXE (the other number)
	ArchARM64     Arch = iana.EFI_ARM64       // 11: ARM64 UEFI PXE
	ArchIA32HTTP  Arch = iana.EFI_X86_HTTP    // 15: 32-bit x86 UEFI HTTP boot
	ArchX64HTTP   Arch = iana.EFI_X86_64_HTTP // 16: x86-64 UEFI HTTP boot
	ArchARM64HTTP Arch = iana.EFI_ARM64_HTTP  // 19: ARM64 UEFI HTTP boot
)

// archNames are the architectures of a boot file table, with the names logs and docs use.
var archNames = map[Arch]string{
	ArchBIOS: "x86 BIOS", ArchIA32: "x86 UEFI", ArchX64: "x86-64 UEFI", ArchX64Alt: "x86-64 UEFI",
	ArchARM64: "ARM64 UEFI", ArchIA32HTTP: "x86 UEFI HTTP", ArchX64HTTP: "x86-64 UEFI HTTP", ArchARM64HTTP: "ARM64 UEFI HTTP",
}

// HTTPArch reports whether a is a UEFI HTTP boot client: it is given a URL, not a TFTP file name.
func HTTPArch(a Arch) bool { return a == ArchIA32HTTP || a == ArchX64HTTP || a == ArchARM64HTTP }

// BootFiles is the boot file table: the iPXE binary, a file name in the iPXE directory, each client
// architecture is given. An architecture missing from it, or mapped to "", gets no offer at all: a firmware
// given a binary for another architecture fails to boot it, while one given nothing tries its next boot entry.
type BootFiles map[Arch]string

// StandardBootFiles is the fixed table of the x86 names: undionly.kpxe for BIOS, ipxe.efi for x86-64 UEFI (PXE
// and HTTP). A DHCP without a table uses it; nix8sd serves DefaultBootFiles.
func StandardBootFiles() BootFiles {
	return BootFiles{ArchBIOS: "undionly.kpxe", ArchX64: "ipxe.efi", ArchX64Alt: "ipxe.efi", ArchX64HTTP: "ipxe.efi"}
}

// defaultBootFiles are the candidates DefaultBootFiles looks for in the iPXE directory, the first present one
// of each group winning. UEFI prefers the SNP builds (Debian's snponly.efi, nixpkgs' snp.efi): they drive the
// NIC through the firmware's own driver and hand it back intact when they exit, so the firmware can go on to
// its next boot entry; Debian 12's ipxe.efi (2019) hangs in its exit path after using the network under OVMF.
// The ARM64 and 32-bit names are iPXE's bin-arm64-efi/ and bin-i386-efi/ builds, renamed. Without a candidate
// present the last name stands when required (so Check names what is missing), else the architecture gets
// nothing.
var defaultBootFiles = []struct {
	archs    []Arch
	names    []string
	required bool
}{
	{[]Arch{ArchBIOS}, []string{"undionly.kpxe"}, true},
	{[]Arch{ArchX64, ArchX64Alt, ArchX64HTTP}, []string{"snponly.efi", "snp.efi", "ipxe.efi"}, true},
	{[]Arch{ArchARM64, ArchARM64HTTP}, []string{"snp-arm64.efi", "ipxe-arm64.efi"}, false},
	{[]Arch{ArchIA32, ArchIA32HTTP}, []string{"snp-i386.efi", "ipxe-i386.efi"}, false},
}

// DefaultBootFiles is the table for the iPXE directory dir: BIOS undionly.kpxe; x86-64 UEFI snponly.efi,
// snp.efi or ipxe.efi; ARM64 UEFI snp-arm64.efi or ipxe-arm64.efi; 32-bit UEFI snp-i386.efi or ipxe-i386.efi
// (the first present of each). PXE and HTTP boot of an architecture get the same file.
func DefaultBootFiles(dir string) BootFiles {
	b := BootFiles{}
	for _, g := range defaultBootFiles {
		file := ""
		if g.required {
			file = g.names[len(g.names)-1]
		}
		for _, n := range g.names {
			if st, err := os.Stat(filepath.Join(dir, n)); err == nil && st.Mode().IsRegular() {
				file = n
				break
			}
		}
		for _, a := range g.archs {
			b[a] = file
		}
	}
	return b
}

// bootFileRe: a plain file name, nothing a TFTP or HTTP path or an iPXE expansion could make more of.
var bootFileRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._+-]{0,99}$`)

// ParseBootFile parses "ARCH=FILE" (the --pxe-boot-file flag): ARCH an option 93 number of the table
// (0, 6, 7, 9, 11, 15, 16, 19), FILE a file name in the iPXE directory, or empty for "no offer".
func ParseBootFile(s string) (Arch, string, error) {
	k, file, ok := strings.Cut(s, "=")
	n, err := strconv.ParseUint(k, 10, 16)
	if !ok || err != nil {
		return 0, "", fmt.Errorf("%q: want ARCH=FILE, ARCH a client architecture number (DHCP option 93) of %s", s, knownArchs())
	}
	a := Arch(n)
	if _, known := archNames[a]; !known {
		return 0, "", fmt.Errorf("%q: architecture %d is not one nix8s boots; known: %s", s, n, knownArchs())
	}
	if file != "" && (!bootFileRe.MatchString(file) || strings.Contains(file, "..")) {
		return 0, "", fmt.Errorf("%q: %q is not a plain file name in the iPXE directory", s, file)
	}
	return a, file, nil
}

func knownArchs() string {
	var s []string
	for _, a := range slices.Sorted(maps.Keys(archNames)) {
		s = append(s, fmt.Sprintf("%d (%s)", a, archNames[a]))
	}
	return strings.Join(s, ", ")
}

// Files lists the table's distinct file names, sorted: what TFTP and HTTP serve.
func (b BootFiles) Files() []string {
	var fs []string
	for _, f := range b {
		if f != "" && !slices.Contains(fs, f) {
			fs = append(fs, f)
		}
	}
	slices.Sort(fs)
	return fs
}

// Check reports every file of the table missing from dir.
func (b BootFiles) Check(dir string) error {
	var errs []error
	for _, a := range slices.Sorted(maps.Keys(b)) {
		f := b[a]
		if f == "" {
			continue
		}
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || !st.Mode().IsRegular() {
			errs = append(errs, fmt.Errorf("the boot file of architecture %d (%s), %s/%s, is missing", a, archNames[a], dir, f))
		}
	}
	return errors.Join(errs...)
}

// ClientArchOf is the architecture a PXE or HTTP boot client announced: option 93, else the "Arch:NNNNN" of
// its vendor class (option 60), else x86 BIOS (PXE 2.1 clients without either are BIOS).
func ClientArchOf(m *dhcpv4.DHCPv4) Arch {
	if as := m.ClientArch(); len(as) > 0 {
		return as[0]
	}
	class := m.ClassIdentifier()
	if _, rest, ok := strings.Cut(class, ":Arch:"); ok {
		if n, err := strconv.ParseUint(strings.SplitN(rest, ":", 2)[0], 10, 16); err == nil {
			return Arch(n)
		}
	}
	return ArchBIOS
}

// archLabel is a's metric label: its number when the table knows it, else "other" (a client picks any of
// 65536 values; the label set stays bounded).
func archLabel(a Arch) string {
	if _, ok := archNames[a]; ok {
		return strconv.Itoa(int(a))
	}
	return "other"
}

// String lists the table as "ARCH=FILE ...", by architecture (for the log).
func (b BootFiles) String() string {
	var s []string
	for _, a := range slices.Sorted(maps.Keys(b)) {
		s = append(s, fmt.Sprintf("%d=%s", a, b[a]))
	}
	return strings.Join(s, " ")
}
