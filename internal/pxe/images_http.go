package pxe

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// fileResponse records the status and the body bytes of a file response for the metrics, and keeps the
// kernel's sendfile(2). http.ServeContent copies the file with io.Copy, which sends it with sendfile only
// when the ResponseWriter has ReadFrom (net/http's own does, down to the TCP connection); a wrapper with only
// Write hides it, and the body then goes through a read and a write per 32 KiB, copied twice in memory.
type fileResponse struct {
	http.ResponseWriter
	code int
	// n is the body bytes handed to the connection: what write(2) and sendfile(2) accepted, also for a
	// download the client broke off.
	n int64
}

func (w *fileResponse) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *fileResponse) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// ReadFrom hands the body to the connection's ReadFrom (sendfile for a file on a TCP connection). The header
// is flushed first: net/http's ReadFrom would otherwise copy the first 512 bytes into its buffer (for content
// sniffing, which the set Content-Type makes moot) and report them sent before they reached the socket, so
// a client gone before the header would still be counted 512 bytes. After the flush, n is what sendfile
// accepted.
func (w *fileResponse) ReadFrom(src io.Reader) (int64, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok { // not net/http's writer, nor one that passes ReadFrom on (HTTP/2): copy, counted by Write
		return io.Copy(writeOnly{w}, src)
	}
	if err := http.NewResponseController(w.ResponseWriter).Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return 0, err
	}
	// No whole-response write timeout for a file of hundreds of MB: each chunk gets its own deadline, so a
	// client must take at least fileChunk per fileChunkTime (32 KiB/s) or is cut, however large the file.
	rc := http.NewResponseController(w.ResponseWriter)
	var total int64
	for {
		if err := rc.SetWriteDeadline(time.Now().Add(fileChunkTime)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return total, err
		}
		// One level of io.LimitedReader around the file, as http.ServeContent passes it: sendfile(2) sees
		// through exactly one.
		want, r := int64(fileChunk), src
		lr, limited := src.(*io.LimitedReader)
		if limited {
			want = min(want, lr.N)
			r = lr.R
		}
		n, err := rf.ReadFrom(&io.LimitedReader{R: r, N: want})
		if limited {
			lr.N -= n
		}
		total += n
		w.n += n
		if err != nil || n < want || (limited && lr.N <= 0) {
			return total, err
		}
	}
}

// fileChunk and fileChunkTime are the least rate a file download must keep: 1 MiB per 32 s.
const (
	fileChunk     = 1 << 20
	fileChunkTime = 32 * time.Second
)

// Unwrap lets http.ResponseController reach the connection's writer (deadlines, flushes).
func (w *fileResponse) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *fileResponse) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// writeOnly hides ReadFrom, so that io.Copy into it uses Write.
type writeOnly struct{ io.Writer }
