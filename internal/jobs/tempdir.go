package jobs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// TempDir is one daemon's private directory for the operations' secret temporary files: the extra-files
// trees of installs (the installed system's host key, the operator's files), the token files on their way
// to a node, the ssh wrappers. The daemon points TMPDIR at it, so every temporary file of the process and
// of the programs it runs lands there. Each operation removes its own files on every path it returns by;
// Close removes the directory when the daemon stops; and what a daemon that died left behind is removed by
// the next one to start with the same state directory (Sweep), told apart from a live daemon's directory
// by the flock the live one holds on its .lock file (the kernel drops it when the process dies).
type TempDir struct {
	// Dir is the directory, 0700.
	Dir  string
	lock *os.File
}

// OpenTempDir sweeps <stateDir>/tmp of dead daemons' directories and makes this daemon's own there. swept
// names what was removed.
func OpenTempDir(stateDir string) (td *TempDir, swept []string, err error) {
	base := filepath.Join(stateDir, "tmp")
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, nil, err
	}
	if err := os.Chmod(base, 0o700); err != nil {
		return nil, nil, err
	}
	if swept, err = Sweep(base); err != nil {
		return nil, swept, err
	}
	dir, err := os.MkdirTemp(base, "nix8sd-")
	if err != nil {
		return nil, swept, err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, swept, fmt.Errorf("locking %s: %w", dir, err)
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return &TempDir{Dir: dir, lock: f}, swept, nil
}

// Sweep removes the directories in base that no live daemon holds: its .lock can be locked (its daemon
// died), or it has none and is older than a minute (a daemon died making it).
func Sweep(base string) ([]string, error) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return nil, err
	}
	var swept []string
	var errs []error
	for _, e := range ents {
		dir := filepath.Join(base, e.Name())
		f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR, 0)
		switch {
		case errors.Is(err, os.ErrNotExist):
			info, serr := os.Lstat(dir)
			if serr != nil || time.Since(info.ModTime()) < time.Minute {
				continue
			}
		case err != nil:
			errs = append(errs, err)
			continue
		default:
			lerr := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if lerr != nil {
				f.Close()
				continue // a live daemon's
			}
		}
		rerr := os.RemoveAll(dir)
		if f != nil {
			f.Close()
		}
		if rerr != nil {
			errs = append(errs, rerr)
			continue
		}
		swept = append(swept, dir)
	}
	return swept, errors.Join(errs...)
}

// Close removes the directory and whatever is still in it.
func (t *TempDir) Close() error {
	err := os.RemoveAll(t.Dir)
	t.lock.Close()
	return err
}
