package pxe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nix8s/nix8s/internal/conns"
)

// Server runs DHCP, TFTP and HTTP together on one address, as nix8sd does. Listen opens every socket before
// anything is served, so a port in use is an error at start.
type Server struct {
	DHCP *DHCP
	TFTP *TFTP
	HTTP *HTTP
	// RA, when set, answers IPv6 router solicitations (see RouterAdvertiser).
	RA *RouterAdvertiser
	// HTTPAddr and TFTPAddr to listen on, e.g. 10.0.0.1:8081 and 10.0.0.1:69. An empty HTTPAddr serves no HTTP
	// here: the HTTP handler is mounted elsewhere (nix8sd serves it on its API listener).
	HTTPAddr, TFTPAddr string
	// Timeouts and Conns bound the HTTP listener's requests and connections (conns.DefaultTimeouts; nil Conns:
	// no cap).
	Timeouts conns.Timeouts
	Conns    *conns.Limiter
	Logger   *slog.Logger

	hl net.Listener
	tc net.PacketConn
}

// Listen opens the HTTP, TFTP and DHCP sockets; Run calls it when it was not called.
func (s *Server) Listen() error {
	if s.hl != nil || s.tc != nil {
		return nil
	}
	if err := CheckBaseURL(s.HTTP.BaseURL); err != nil {
		return err
	}
	var err error
	if s.HTTPAddr != "" {
		if s.hl, err = net.Listen("tcp", s.HTTPAddr); err != nil {
			return fmt.Errorf("http: %w", err)
		}
	}
	if s.TFTP != nil {
		if s.tc, err = net.ListenPacket("udp4", s.TFTPAddr); err != nil {
			s.close()
			return fmt.Errorf("tftp: %w", err)
		}
	}
	if s.DHCP != nil {
		if err := s.DHCP.Listen(); err != nil {
			s.close()
			return err
		}
	}
	return nil
}

func (s *Server) close() {
	if s.hl != nil {
		s.hl.Close()
	}
	if s.tc != nil {
		s.tc.Close()
	}
	s.hl, s.tc = nil, nil
}

// Close closes the sockets Listen opened, for a server that will not Run after all.
func (s *Server) Close() {
	s.close()
	if s.DHCP != nil {
		s.DHCP.close()
	}
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if err := s.Listen(); err != nil {
		return err
	}
	hl, tc := s.hl, s.tc
	defer func() { s.hl, s.tc = nil, nil }()
	hs := s.Timeouts.Server(s.HTTP, s.Conns)
	errc := make(chan error, 4)
	if hl != nil {
		if s.Conns != nil {
			hl = s.Conns.Listen(hl)
		}
		go func() { errc <- hs.Serve(hl) }()
	}
	if tc != nil {
		go func() { errc <- s.TFTP.Serve(tc) }()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.RA != nil {
		go func() {
			if err := s.RA.Serve(ctx); err != nil {
				errc <- err
			}
		}()
	}
	dhcpDone := make(chan error, 1)
	if s.DHCP != nil {
		go func() { dhcpDone <- s.DHCP.Serve(ctx) }()
	} else {
		close(dhcpDone)
	}
	var first error
	select {
	case <-ctx.Done():
	case err := <-errc:
		first = err
	case err := <-dhcpDone:
		first = err
	}
	cancel()
	sctx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer c2()
	if hl != nil {
		hs.Shutdown(sctx)
	}
	if s.TFTP != nil {
		s.TFTP.Shutdown()
	}
	<-dhcpDone
	if first != nil && !errors.Is(first, http.ErrServerClosed) {
		return first
	}
	return nil
}
