package main

import (
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
		c.Observe("a", 2, "c1")
		c.Observe("b", 1, "c2")
		c.Observe("a", 3, "c3")
		want := map[string]int{"a": 3, "b": 1}
		if c.Duplicates != 0 || c.Gaps != 0 || c.Missing(want) != 0 || !c.Caught(want) {
			t.Errorf("clean stream flagged: %+v missing %d", c, c.Missing(want))
		}
	})
	t.Run("ErrDuplicate", func(t *testing.T) {
		c := NewChecker(nil)
		c.Observe("a", 1, "c1")
		c.Observe("a", 1, "c1")
		if c.Duplicates != 1 {
			t.Errorf("duplicates = %d", c.Duplicates)
		}
	})
	t.Run("ErrOutOfOrder", func(t *testing.T) {
		c := NewChecker(nil)
		c.Observe("a", 2, "c2")
		c.Observe("a", 1, "c1")
		if c.Duplicates != 1 || c.Gaps != 1 || c.Missing(map[string]int{"a": 2}) != 1 {
			t.Errorf("dup %d gaps %d", c.Duplicates, c.Gaps)
		}
	})
	t.Run("ErrMissingTail", func(t *testing.T) {
		c := NewChecker(map[string]int{"a": 1})
		c.Observe("a", 2, "c1")
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
			c.Observe("x", 1, "c1")
			c.Observe("y", 1, "c2")
		}
		d.Observe("y", 1, "c2")
		d.Observe("x", 1, "c1")
		if a.Order() != b.Order() || a.Order() == d.Order() {
			t.Error("order digest does not tell orders apart")
		}
	})
}
