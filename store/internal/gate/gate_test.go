package gate

import (
	"runtime"
	"testing"
)

// TestShutWaitsForTheCallsInside lets two calls in and shuts the gate from
// another goroutine: nothing enters once Shut is waiting, and Shut returns
// only after both calls left.
func TestShutWaitsForTheCallsInside(t *testing.T) {
	var g Gate
	if !g.Enter() || !g.Enter() {
		t.Fatal("an open gate refused a call")
	}
	inside := -1
	shut := make(chan struct{})
	go func() {
		g.Shut()
		g.mu.Lock()
		inside = g.n
		g.mu.Unlock()
		close(shut)
	}()
	// Shut makes its condition just before it first waits on it: once it
	// exists, Shut is waiting (a Shut that does not wait never makes it,
	// and the test times out).
	for {
		g.mu.Lock()
		waiting := g.idle != nil
		g.mu.Unlock()
		if waiting {
			break
		}
		runtime.Gosched()
	}
	if g.Enter() {
		t.Fatal("a gate being shut let a call in")
	}
	g.Leave()
	g.Leave()
	<-shut
	if inside != 0 {
		t.Fatalf("Shut returned with %d calls inside", inside)
	}
	if g.Enter() {
		t.Fatal("a shut gate let a call in")
	}
}

// TestShutWithNothingInside returns at once, and again.
func TestShutWithNothingInside(t *testing.T) {
	var g Gate
	g.Enter()
	g.Leave()
	g.Shut()
	g.Shut()
	if g.Enter() {
		t.Fatal("a shut gate let a call in")
	}
}
