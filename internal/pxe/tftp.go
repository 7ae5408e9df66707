package pxe

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pin/tftp/v3"
)

// TFTP serves the iPXE binaries read-only from Dir (Debian's ipxe package: /usr/lib/ipxe). Only the listed
// Files can be read; writes are refused.
type TFTP struct {
	Dir     string
	Files   []string // default: undionly.kpxe, ipxe.efi, snponly.efi
	Metrics *Metrics
	Logger  *slog.Logger

	mu     sync.Mutex
	srv    *tftp.Server
	conn   net.PacketConn
	closed bool
}

func (t *TFTP) allowed(name string) bool {
	files := t.Files
	if files == nil {
		files = []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"}
	}
	for _, f := range files {
		if f == name {
			return true
		}
	}
	return false
}

func (t *TFTP) read(filename string, rf io.ReaderFrom) error {
	name := filepath.Base(filepath.Clean("/" + filename))
	if !t.allowed(name) {
		t.Metrics.tftp("other", "error", 0)
		return fmt.Errorf("tftp: %q is not served here", filename)
	}
	f, err := os.Open(filepath.Join(t.Dir, name))
	if err != nil {
		t.Metrics.tftp(name, "error", 0)
		return fmt.Errorf("tftp: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		if ot, ok := rf.(tftp.OutgoingTransfer); ok {
			ot.SetSize(st.Size())
		}
	}
	n, err := rf.ReadFrom(f)
	if err != nil {
		t.Metrics.tftp(name, "error", n)
		return err
	}
	t.Metrics.tftp(name, "ok", n)
	if t.Logger != nil {
		peer := ""
		if ot, ok := rf.(tftp.OutgoingTransfer); ok {
			a := ot.RemoteAddr()
			peer = a.String()
		}
		t.Logger.Info("tftp sent", "file", name, "bytes", n, "peer", peer)
	}
	return nil
}

// Serve answers TFTP on conn until Shutdown.
func (t *TFTP) Serve(conn net.PacketConn) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return conn.Close()
	}
	srv := tftp.NewServer(t.read, func(string, io.WriterTo) error { return errors.New("tftp: read-only") })
	srv.SetTimeout(2 * time.Second)
	srv.SetRetries(5)
	t.srv, t.conn = srv, conn
	t.mu.Unlock()
	return srv.Serve(conn)
}

// Shutdown stops Serve (also one that has not started yet).
func (t *TFTP) Shutdown() {
	t.mu.Lock()
	t.closed = true
	srv, conn := t.srv, t.conn
	t.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
	}
	if conn != nil {
		conn.Close()
	}
}
