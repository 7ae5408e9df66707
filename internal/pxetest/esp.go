package pxetest

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// UEFIDiskMarker is what UEFIDisk's bootloader prints on the console.
const UEFIDiskMarker = "NIX8S-UEFI-DISK"

// UEFIDisk writes a raw disk whose one partition is an EFI system partition holding a bootloader at the
// removable-media path \EFI\BOOT\BOOTX64.EFI, where firmware looks on a disk without boot entries of its own:
// a GRUB image (Debian's grub-efi-amd64-bin, grub-mkimage) whose embedded config prints UEFIDiskMarker and
// powers off. Seeing the marker proves the firmware went on to boot the disk.
func UEFIDisk(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"grub-mkimage", "mkfs.vfat", "mmd", "mcopy"} {
		if _, err := exec.LookPath(p); err != nil {
			Unavailable(t, "the UEFI disk needs %s (grub-common, dosfstools, mtools)", p)
		}
	}
	if _, err := os.Stat("/usr/lib/grub/x86_64-efi/echo.mod"); err != nil {
		Unavailable(t, "the UEFI disk needs grub-efi-amd64-bin: %v", err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "grub.cfg")
	if err := os.WriteFile(cfg, []byte("echo "+UEFIDiskMarker+"\nhalt\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	efi := filepath.Join(dir, "BOOTX64.EFI")
	if err := run("grub-mkimage", "-O", "x86_64-efi", "-p", "/EFI/BOOT", "-c", cfg, "-o", efi, "echo", "halt"); err != nil {
		t.Fatal(err)
	}
	// 24 MiB: an MBR, then from sector 2048 one partition of type 0xEF (EFI system) with a FAT16 on it.
	const sectors, start = 24 << 11, 2048
	disk := filepath.Join(dir, "disk.img")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	mbr := make([]byte, 512)
	entry := mbr[446:462]
	entry[4] = 0xEF
	binary.LittleEndian.PutUint32(entry[8:], start)
	binary.LittleEndian.PutUint32(entry[12:], sectors-start)
	mbr[510], mbr[511] = 0x55, 0xAA
	_, err = f.Write(mbr)
	if err == nil {
		err = f.Truncate(sectors * 512)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	img := disk + "@@" + strconv.Itoa(start*512)
	for _, step := range [][]string{
		{"mkfs.vfat", "-F", "16", "--offset", strconv.Itoa(start), disk, strconv.Itoa((sectors - start) / 2)},
		{"mmd", "-i", img, "::/EFI", "::/EFI/BOOT"},
		{"mcopy", "-i", img, efi, "::/EFI/BOOT/BOOTX64.EFI"},
	} {
		if err := run(step...); err != nil {
			t.Fatal(err)
		}
	}
	return disk
}
