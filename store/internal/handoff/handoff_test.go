package handoff

import (
	"sync"
	"testing"
)

// TestTakeOrAbandonNeverBoth races a committer's Take against a caller's
// Abandon: exactly one of them wins, every time.
func TestTakeOrAbandonNeverBoth(t *testing.T) {
	for range 1000 {
		var s State
		var took, left bool
		var wg sync.WaitGroup
		wg.Go(func() { took = s.Take() })
		wg.Go(func() { left = s.Abandon() })
		wg.Wait()
		if took == left {
			t.Fatalf("Take %v, Abandon %v: want exactly one", took, left)
		}
		if s.Take() || s.Abandon() {
			t.Fatal("a settled request changed hands again")
		}
	}
}
