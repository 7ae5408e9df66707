package pxe

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

// NixBuild builds a member's netboot installer from the flake with
//
//	nix build <flake>#nixosConfigurations.<cluster>-<member>.config.system.build.{kernel,netbootRamdisk,toplevel}
//
// and serves it by the hash of the ramdisk's store path, so a rebuild with the same result is a cache hit and
// a changed configuration gets a new URL. It cannot run on the test machines (no Nix store builds there); the
// end-to-end tests serve a Debian kernel and a busybox initramfs through DirImages instead.
type NixBuild struct {
	// Flake is the flake directory or reference holding nixosConfigurations.<cluster>-<member>.
	Flake string
	// Nix is the nix program ("nix" when empty).
	Nix string

	mu     sync.Mutex
	images map[string]Image
}

// Build builds the netboot image of one configuration and returns its ID; the build log is in the error.
func (n *NixBuild) Build(ctx context.Context, config string) (string, error) {
	if !ValidImageID(config) {
		return "", fmt.Errorf("configuration name %q is not a plain name", config)
	}
	nix := n.Nix
	if nix == "" {
		nix = "nix"
	}
	base := n.Flake + "#nixosConfigurations." + config + ".config.system.build."
	var out, log bytes.Buffer
	cmd := exec.CommandContext(ctx, nix, "--extra-experimental-features", "nix-command flakes", "build", "--no-link",
		"--print-out-paths", base+"kernel", base+"netbootRamdisk", base+"toplevel")
	cmd.Stdout, cmd.Stderr = &out, &log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the netboot image of %s: %w\n%s", config, err, log.String())
	}
	paths := strings.Fields(out.String())
	if len(paths) != 3 {
		return "", fmt.Errorf("building the netboot image of %s: expected 3 store paths, got %q", config, out.String())
	}
	id := strings.SplitN(filepath.Base(paths[1]), "-", 2)[0]
	img := Image{Kernel: filepath.Join(paths[0], "bzImage"), Initrd: filepath.Join(paths[1], "initrd"),
		Cmdline: []string{"init=" + paths[2] + "/init"}}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.images == nil {
		n.images = map[string]Image{}
	}
	n.images[id] = img
	return id, nil
}

// Image implements ImageSource for images built by this NixBuild.
func (n *NixBuild) Image(_ context.Context, id string) (Image, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	img, ok := n.images[id]
	if !ok {
		return Image{}, fmt.Errorf("image %q: %w", id, ErrNotFound)
	}
	return img, nil
}
