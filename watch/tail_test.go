package watch

import (
	"testing"

	"github.com/calsync/calsync/store"
)

// A change that does not follow the tail's head (the store could not
// report the changes between) empties the tail and starts it after the
// gap: a position before the gap is not served from memory, so a stream
// there reads the change log instead of skipping what is missing.
func TestTailGapSendsStreamsToTheLog(t *testing.T) {
	tl := newTail(8, 1<<20)
	tl.init(0)
	for c := store.Cursor(1); c <= 3; c++ {
		if !tl.push(&entry{cursor: c}) {
			t.Fatalf("push %d refused", c)
		}
	}
	if got, ok := tl.after(1, nil, 10); !ok || len(got) != 2 {
		t.Fatalf("after(1) = %d entries, %v; want 2 from memory", len(got), ok)
	}
	if !tl.push(&entry{cursor: 7}) {
		t.Fatal("push 7 refused")
	}
	if tl.gaps != 1 || tl.head != 7 {
		t.Fatalf("after a gap: gaps %d, head %d; want 1, 7", tl.gaps, tl.head)
	}
	for _, pos := range []store.Cursor{1, 3, 5} {
		if _, ok := tl.after(pos, nil, 10); ok {
			t.Fatalf("after(%d) served from memory across the gap", pos)
		}
	}
	if got, ok := tl.after(6, nil, 10); !ok || len(got) != 1 || got[0].cursor != 7 {
		t.Fatalf("after(6) = %v, %v; want the change after the gap", got, ok)
	}
	// Changes that follow each other are no gap.
	tl.push(&entry{cursor: 8})
	if tl.gaps != 1 {
		t.Fatalf("gaps %d after a following change, want 1", tl.gaps)
	}
}
