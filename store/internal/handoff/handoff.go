// Package handoff is the handshake between a caller waiting for a group
// commit and the committer that runs its request: a queued request is
// either taken by a transaction or abandoned by its caller (whose ctx
// ended first), never both. A caller that cannot abandon its request
// waits for the transaction's outcome, so its answer is always exact.
package handoff

import (
	"context"
	"sync/atomic"
)

const (
	queued int32 = iota
	taken
	abandoned
)

// State is a request's place in the handshake; the zero value is queued.
// It is safe for concurrent use.
type State struct{ v atomic.Int32 }

// Take marks the request taken by a transaction. It reports false when
// the request was abandoned first.
func (s *State) Take() bool { return s.v.CompareAndSwap(queued, taken) }

// Abandon marks the request abandoned. It reports false when a
// transaction took it first: its outcome is then the answer.
func (s *State) Abandon() bool { return s.v.CompareAndSwap(queued, abandoned) }

// Submit is the caller's side: it queues req, whose handshake is st, on
// queue and waits for its outcome on done. If ctx ends first, it returns
// ctx's error when the request is still in the queue (or never got in) and
// is abandoned there; a request a transaction has taken still gets its
// outcome, which is then the answer.
func Submit[R, T any](ctx context.Context, queue chan<- R, req R, st *State, done <-chan T) (T, error) {
	var none T
	select {
	case queue <- req:
	case <-ctx.Done():
		return none, ctx.Err()
	}
	select {
	case r := <-done:
		return r, nil
	case <-ctx.Done():
		if st.Abandon() {
			return none, ctx.Err()
		}
		return <-done, nil
	}
}
