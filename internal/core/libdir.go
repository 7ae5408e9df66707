package core

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// materialise puts lib on disk under cacheDir/lib-<content hash> and returns that directory. Each process
// writes into a fresh temporary directory and renames it into place, so concurrent processes never see a
// half-written lib: whoever renames first wins and the others discard their copy.
func materialise(lib fs.FS, cacheDir string) (string, error) {
	sum, err := hashFS(lib)
	if err != nil {
		return "", fmt.Errorf("hashing the embedded core: %w", err)
	}
	dir := filepath.Join(cacheDir, "lib-"+sum[:20])
	if _, err := os.Stat(filepath.Join(dir, "default.nix")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("creating cache directory: %w", err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".lib-tmp-")
	if err != nil {
		return "", fmt.Errorf("creating cache directory: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op after a successful rename
	if err := copyFS(tmp, lib); err != nil {
		return "", fmt.Errorf("writing the core to %s: %w", tmp, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another process got there first; its copy has the same content.
		if _, statErr := os.Stat(filepath.Join(dir, "default.nix")); statErr == nil {
			return dir, nil
		}
		return "", fmt.Errorf("moving the core into %s: %w", dir, err)
	}
	return dir, nil
}

// hashFS hashes names and contents of every regular file, in fs.WalkDir's lexical order.
func hashFS(fsys fs.FS) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := fsys.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(h, "%s\x00", p)
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		_, err = h.Write([]byte{0})
		return err
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyFS(dst string, fsys fs.FS) error {
	return fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dst, filepath.FromSlash(p))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}

// materialiseSomewhere materialises into cacheDir when given; otherwise into $XDG_CACHE_HOME/nix8s (or the
// platform's equivalent) and, for users without a usable home (system services), into a private directory
// under the temporary directory.
func materialiseSomewhere(lib fs.FS, cacheDir string) (string, error) {
	if cacheDir != "" {
		return materialise(lib, cacheDir)
	}
	var firstErr error
	if d, err := os.UserCacheDir(); err == nil {
		dir, err := materialise(lib, filepath.Join(d, "nix8s"))
		if err == nil {
			return dir, nil
		}
		firstErr = err
	}
	tmp := filepath.Join(os.TempDir(), fmt.Sprintf("nix8s-%d", os.Getuid()))
	if err := privateDir(tmp); err != nil {
		if firstErr != nil {
			return "", firstErr
		}
		return "", err
	}
	return materialise(lib, tmp)
}

// privateDir creates dir, or accepts an existing one, only if it belongs to this user and nobody else can
// write to it: the core evaluated from it must not be replaceable by another user of a shared /tmp.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating cache directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 || (ok && int(st.Uid) != os.Getuid()) {
		return fmt.Errorf("cache directory %s is not a private directory of this user; remove it or set XDG_CACHE_HOME", dir)
	}
	return nil
}
