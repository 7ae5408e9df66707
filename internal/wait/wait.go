// Package wait is how every operation waits for something to become true (an API server to answer, a node
// to be Ready, ssh to answer with a host key): one probe loop with one meaning of a timeout.
package wait

import (
	"context"
	"time"
)

// Poll runs probe every interval until it succeeds or timeout passes. It returns nil on success; otherwise the
// error of the last probe that finished in time, and why it stopped (context.DeadlineExceeded for the timeout,
// or ctx's own error).
func Poll(ctx context.Context, timeout, interval time.Duration, probe func(context.Context) error) (last, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := probe(ctx)
		if err == nil {
			return nil, nil
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(interval):
		}
	}
}
