package conns

import (
	"net/http"
	"time"
)

// Timeouts of an HTTP server. Write bounds a whole response; file downloads set their own deadline per chunk
// instead (internal/pxe), so an image of any size goes through at a least rate.
type Timeouts struct {
	ReadHeader, Read, Write, Idle time.Duration
}

// DefaultTimeouts are nix8sd's.
var DefaultTimeouts = Timeouts{ReadHeader: 10 * time.Second, Read: time.Minute, Write: 2 * time.Minute, Idle: 2 * time.Minute}

// Server is an http.Server for h with the timeouts t (zero fields: DefaultTimeouts') and, when l is not nil,
// its connection hook.
func (t Timeouts) Server(h http.Handler, l *Limiter) *http.Server {
	d := DefaultTimeouts
	or := func(v, def time.Duration) time.Duration {
		if v > 0 {
			return v
		}
		return def
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: or(t.ReadHeader, d.ReadHeader), ReadTimeout: or(t.Read, d.Read),
		WriteTimeout: or(t.Write, d.Write), IdleTimeout: or(t.Idle, d.Idle)}
	if l != nil {
		hs.ConnState = l.ConnState
	}
	return hs
}
