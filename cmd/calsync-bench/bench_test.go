package main

import (
	"encoding/binary"
	"hash/fnv"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {90, 90 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.1, time.Millisecond}} {
		if got := Percentile(s, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("empty: %v", got)
	}
	if got := Percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("one sample: %v", got)
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, 1500 * time.Microsecond})
	want := Summary{Count: 4, P50: 1.5, P90: 3, P99: 3, Max: 3}
	if s != want {
		t.Errorf("got %+v, want %+v", s, want)
	}
	if (Summarize(nil) != Summary{}) {
		t.Error("empty summary not zero")
	}
}

func TestChecker(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		c := NewChecker(map[string]int{"a": 1})
		c.Observe("a", 2, "c1", false)
		c.Observe("b", 1, "c2", false)
		c.Observe("a", 3, "c3", false)
		want := map[string]int{"a": 3, "b": 1}
		if c.Duplicates != 0 || c.Gaps != 0 || c.Missing(want) != 0 || !c.Caught(want) {
			t.Errorf("clean stream flagged: %+v missing %d", c, c.Missing(want))
		}
	})
	t.Run("ErrDuplicate", func(t *testing.T) {
		c := NewChecker(nil)
		c.Observe("a", 1, "c1", false)
		c.Observe("a", 1, "c1", false)
		if c.Duplicates != 1 {
			t.Errorf("duplicates = %d", c.Duplicates)
		}
		if len(c.DuplicateSamples) != 1 || !strings.Contains(c.DuplicateSamples[0], "event a version 1 at cursor c1") {
			t.Errorf("duplicate samples = %q", c.DuplicateSamples)
		}
	})
	t.Run("ErrChangeFromBeforeStart", func(t *testing.T) {
		c := NewChecker(map[string]int{"a": 1, "b": 1})
		c.Observe("a", 1, "c1", false)
		c.Observe("b", 2, "c2", false)
		c.Observe("b", 2, "c3", false)
		if c.Duplicates != 2 || c.BeforeStart != 1 {
			t.Errorf("duplicates %d (want 2), from before the start %d (want 1)", c.Duplicates, c.BeforeStart)
		}
	})
	t.Run("ErrOutOfOrder", func(t *testing.T) {
		c := NewChecker(nil)
		c.Observe("a", 2, "c2", false)
		c.Observe("a", 1, "c1", false)
		if c.Duplicates != 1 || c.Gaps != 1 || c.Missing(map[string]int{"a": 2}) != 1 {
			t.Errorf("dup %d gaps %d", c.Duplicates, c.Gaps)
		}
	})
	t.Run("ErrMissingTail", func(t *testing.T) {
		c := NewChecker(map[string]int{"a": 1})
		c.Observe("a", 2, "c1", false)
		want := map[string]int{"a": 4, "b": 2}
		if got := c.Missing(want); got != 4 {
			t.Errorf("missing = %d, want 4", got)
		}
		if c.Caught(want) {
			t.Error("caught up while behind")
		}
	})
	t.Run("SameOrderSameDigest", func(t *testing.T) {
		a, b, d := NewChecker(nil), NewChecker(nil), NewChecker(nil)
		for _, c := range []*Checker{a, b} {
			c.Observe("x", 1, "c1", false)
			c.Observe("y", 1, "c2", false)
		}
		d.Observe("y", 1, "c2", false)
		d.Observe("x", 1, "c1", false)
		if a.Order() != b.Order() || a.Order() == d.Order() {
			t.Error("order digest does not tell orders apart")
		}
	})
}

func TestChainCursorIsFNV1a(t *testing.T) {
	for _, c := range []struct {
		digest uint64
		cursor string
	}{{0, ""}, {0, "AQID"}, {0xdeadbeef12345678, "AXb3kWc2y8yTAAAAAAAAAAEh4xJa"}} {
		h := fnv.New64a()
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], c.digest)
		h.Write(b[:])
		h.Write([]byte(c.cursor))
		if got, want := chainCursor(c.digest, c.cursor), h.Sum64(); got != want {
			t.Errorf("chainCursor(%#x, %q) = %#x, want %#x", c.digest, c.cursor, got, want)
		}
	}
}

func TestCheckerRegressions(t *testing.T) {
	c := NewChecker(nil)
	c.Observe("a", 1, "c2", false)
	c.Observe("b", 1, "c1", true)
	if c.Regressions != 1 || c.Duplicates != 0 {
		t.Errorf("regressions %d duplicates %d, want 1 and 0", c.Regressions, c.Duplicates)
	}
}

func TestCheckerCaughtAfterLagging(t *testing.T) {
	c := NewChecker(nil)
	want := map[string]int{"a": 2, "b": 1, "c": 1}
	c.Observe("a", 1, "c1", false)
	if c.Caught(want) {
		t.Fatal("caught up with nothing of b and c")
	}
	// Whichever event Caught remembered, catching it up alone is not enough.
	c.Observe(c.lagging, want[c.lagging], "c2", false)
	if c.Caught(want) {
		t.Fatal("caught up with events still behind")
	}
	for _, k := range []string{"a", "b", "c"} {
		for c.Last(k) < want[k] {
			c.Observe(k, c.Last(k)+1, "c3", false)
		}
	}
	if !c.Caught(want) {
		t.Fatal("not caught up after every final version")
	}
}

func TestParseTitle(t *testing.T) {
	sent := time.Unix(0, 1767225600123456789)
	ver, got, ok := parseTitle(benchTitle(42, sent))
	if !ok || ver != 42 || !got.Equal(sent) {
		t.Errorf("parseTitle(benchTitle(42, %v)) = %d, %v, %v", sent, ver, got, ok)
	}
	for _, title := range []string{"", "bench", "bench 1", "bench x 1", "bench 1 x", "Weekly sync", "bench 1 2 3"} {
		if _, _, ok := parseTitle(title); ok {
			t.Errorf("parseTitle(%q) accepted", title)
		}
	}
}
