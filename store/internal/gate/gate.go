// Package gate counts the calls inside a store so that its Close can wait
// for them to leave and refuse new ones, without making the calls wait
// for each other. A read-write lock would: a call that takes its read
// side twice (a Snapshot callback that reads) deadlocks behind a Close
// waiting for the write side.
package gate

import "sync"

// Gate is open until Shut. Its zero value is open and ready to use; it is
// safe for concurrent use.
type Gate struct {
	mu     sync.Mutex
	idle   *sync.Cond // made by the first Shut that has calls to wait for
	n      int
	closed bool
}

// Enter lets a call in and reports true, or reports false once Shut has
// been called. A call let in must Leave.
func (g *Gate) Enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

// Leave lets a call out.
func (g *Gate) Leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.n == 0 && g.idle != nil {
		g.idle.Broadcast()
	}
}

// Shut refuses every later Enter and waits until every call let in has
// left, so a call inside must not wait for Shut to return.
func (g *Gate) Shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for g.n > 0 {
		if g.idle == nil {
			g.idle = sync.NewCond(&g.mu)
		}
		g.idle.Wait()
	}
}
