package pxe

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/nix8s/nix8s/internal/toolrun"
)

// Image is a netboot kernel and initrd on local disk, with the kernel arguments they need.
type Image struct {
	Kernel, Initrd string
	Cmdline        []string
}

// ImageSource finds netboot images by ID (a store path hash, or a name).
type ImageSource interface {
	Image(ctx context.Context, id string) (Image, error)
}

// DirImages serves images from Dir/<id>/{bzImage,initrd} with optional Dir/<id>/cmdline (whitespace
// separated kernel arguments). The tests use it; an operator can use it for prebuilt images.
type DirImages struct{ Dir string }

// Image implements ImageSource.
func (d DirImages) Image(_ context.Context, id string) (Image, error) {
	if !ValidImageID(id) {
		return Image{}, fmt.Errorf("image %q: %w", id, ErrNotFound)
	}
	dir := filepath.Join(d.Dir, id)
	img := Image{Kernel: filepath.Join(dir, "bzImage"), Initrd: filepath.Join(dir, "initrd")}
	for _, f := range []string{img.Kernel, img.Initrd} {
		if st, err := os.Stat(f); err != nil || !st.Mode().IsRegular() {
			return Image{}, fmt.Errorf("image %q: %w", id, ErrNotFound)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		img.Cmdline = strings.Fields(string(b))
		if err := ValidateCmdline(img.Cmdline); err != nil {
			return Image{}, fmt.Errorf("image %q: %w", id, err)
		}
	}
	return img, nil
}

// NixBuild builds netboot images from a flake: an installable whose output is a directory laid out like
// DirImages (bzImage, initrd, cmdline), e.g. nixosConfigurations.<cluster>-<member>.config.system.build.nix8sNetboot
// (modules/nixos/installer.nix). An image is served under the hash of its store path, so a rebuild with the
// same result is a cache hit and a changed configuration gets a new URL. Real builds cannot run on the test
// machines (no nixpkgs there); the tests run a stand-in nix program and say so.
type NixBuild struct {
	// Flake is the flake directory or reference.
	Flake string
	// Nix is the nix program ("nix" when empty).
	Nix string

	mu     sync.Mutex
	images map[string]string // ID -> store path
}

// MemberInstallable is the attribute of a member's netboot installer in a nix8s flake.
func MemberInstallable(cluster, member string) string {
	return "nixosConfigurations." + cluster + "-" + member + ".config.system.build.nix8sNetboot"
}

// DiscoveryInstallable is the attribute of the discovery image in a nix8s flake (for the current system).
const DiscoveryInstallable = "nix8s-discovery-netboot"

var installableRe = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9_.-]*$`)

// Build builds installable (an attribute path of Flake) and returns its image ID; the build's output goes to
// log as it runs.
func (n *NixBuild) Build(ctx context.Context, installable string, log io.Writer) (string, error) {
	if !installableRe.MatchString(installable) || strings.Contains(installable, "..") {
		return "", fmt.Errorf("%q is not a plain attribute path", installable)
	}
	nix := n.Nix
	if nix == "" {
		nix = "nix"
	}
	var out bytes.Buffer
	// In a process group of its own, ended with ctx and with the daemon (toolrun): the evaluator and the
	// builds it starts go with it.
	cmd := exec.Command(nix, "--extra-experimental-features", "nix-command flakes", "build", "--no-link",
		"--print-out-paths", "--print-build-logs", n.Flake+"#"+installable)
	cmd.Stdout = &out // the store path: data from stdout only, nix's messages go to the log
	fmt.Fprintf(log, "nix8s: building %s#%s\n", n.Flake, installable)
	if err := toolrun.Exec(ctx, toolrun.Tool{Name: "nix build", Cmd: cmd, Line: func(l string) { fmt.Fprintln(log, l) }}); err != nil {
		return "", fmt.Errorf("building %s: %w", installable, err)
	}
	paths := strings.Fields(out.String())
	if len(paths) != 1 || !filepath.IsAbs(paths[0]) {
		return "", fmt.Errorf("building %s: expected one store path, got %q", installable, out.String())
	}
	id := strings.SplitN(filepath.Base(paths[0]), "-", 2)[0]
	if !ValidImageID(id) {
		return "", fmt.Errorf("building %s: %q is not a store path", installable, paths[0])
	}
	if _, err := (DirImages{Dir: filepath.Dir(paths[0])}).Image(ctx, filepath.Base(paths[0])); err != nil {
		return "", fmt.Errorf("building %s: %s is not a netboot image (bzImage, initrd, cmdline): %w", installable, paths[0], err)
	}
	fmt.Fprintf(log, "nix8s: %s is image %s\n", paths[0], id)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.images == nil {
		n.images = map[string]string{}
	}
	n.images[id] = paths[0]
	return id, nil
}

// Image implements ImageSource for images built by this NixBuild.
func (n *NixBuild) Image(ctx context.Context, id string) (Image, error) {
	n.mu.Lock()
	p, ok := n.images[id]
	n.mu.Unlock()
	if !ok {
		return Image{}, fmt.Errorf("image %q: %w", id, ErrNotFound)
	}
	return DirImages{Dir: filepath.Dir(p)}.Image(ctx, filepath.Base(p))
}
