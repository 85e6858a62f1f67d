// Package handoff is the handshake between a caller waiting for a group
// commit and the committer that runs its request: a queued request is
// either taken by a transaction or abandoned by its caller (whose ctx
// ended first), never both. A caller that cannot abandon its request
// waits for the transaction's outcome, so its answer is always exact.
package handoff

import "sync/atomic"

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
