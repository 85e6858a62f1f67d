package main

import (
	"fmt"
	"strconv"
	"sync"
)

// Checker verifies one watch stream against what was sent: every event is
// updated by a single sender that waits for each answer before the next
// version, so a correct stream shows each event's versions one by one,
// each exactly once, and ends at the last version the server accepted.
type Checker struct {
	mu   sync.Mutex
	last map[string]int
	// Received counts the event changes observed.
	Received int64
	// Duplicates counts versions at or below one already seen: repeats, or
	// changes delivered out of order.
	Duplicates int64
	// BeforeStart counts the duplicates of versions the stream was
	// expected to start after (its base) that it never delivered before:
	// changes committed before the watch began, delivered as new. They are
	// included in Duplicates.
	BeforeStart int64
	// Gaps counts versions skipped when a later one arrived first.
	Gaps int64
	// Regressions counts cursors not above the stream's previous one.
	Regressions int64
	// order chains the cursors in arrival order, so that streams with the
	// same filter can be shown to agree on one order.
	order  uint64
	hashed bool
	// lagging is an event Caught last found behind.
	lagging string
	// lastCursor is the cursor of each event's newest version, and
	// DuplicateSamples describes the first few duplicates with both
	// cursors, so a report can tell a change sent twice (one cursor) from
	// a version written twice (two).
	lastCursor       map[string]string
	DuplicateSamples []string
}

// maxDuplicateSamples bounds Checker.DuplicateSamples.
const maxDuplicateSamples = 5

// NewChecker returns a Checker for a stream that starts after base: the
// version of each event the stream is expected to have already.
func NewChecker(base map[string]int) *Checker {
	last := make(map[string]int, len(base))
	for k, v := range base {
		last[k] = v
	}
	return &Checker{last: last, lastCursor: make(map[string]string, len(base))}
}

// Observe records that version ver of event key arrived with cursor;
// regressed says the cursor was not above the stream's previous one. It
// runs once per change received and allocates nothing.
func (c *Checker) Observe(key string, ver int, cursor string, regressed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Received++
	if regressed {
		c.Regressions++
	}
	prev := c.last[key]
	switch {
	case ver <= prev:
		c.Duplicates++
		if c.lastCursor[key] == "" {
			c.BeforeStart++
		}
		if len(c.DuplicateSamples) < maxDuplicateSamples {
			c.DuplicateSamples = append(c.DuplicateSamples, fmt.Sprintf("event %s version %d at cursor %s (seq %s) after version %d at cursor %s (seq %s)",
				key, ver, cursor, seqString(cursor), prev, c.lastCursor[key], seqString(c.lastCursor[key])))
		}
		return
	case ver > prev+1:
		c.Gaps += int64(ver - prev - 1)
	}
	c.last[key] = ver
	c.lastCursor[key] = cursor
	c.order, c.hashed = chainCursor(c.order, cursor), true
}

// chainCursor extends the order digest with a cursor: FNV-1a over the
// previous digest (big-endian) and the cursor's bytes.
func chainCursor(digest uint64, cursor string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 56; i >= 0; i -= 8 {
		h = (h ^ uint64(byte(digest>>i))) * prime
	}
	for i := 0; i < len(cursor); i++ {
		h = (h ^ uint64(cursor[i])) * prime
	}
	return h
}

// Last returns the newest version seen of key.
func (c *Checker) Last(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last[key]
}

// Order returns a digest of the cursors seen, in arrival order.
func (c *Checker) Order() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order
}

// Caught reports whether the stream reached every final version in want.
// Callers poll it while changes arrive, so it first checks the event that
// was behind last time, and walks want only once that one is caught up:
// the lock is held for long only a few times per replay.
func (c *Checker) Caught(want map[string]int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := want[c.lagging]; ok && c.last[c.lagging] < v {
		return false
	}
	for k, v := range want {
		if c.last[k] < v {
			c.lagging = k
			return false
		}
	}
	return true
}

// Missing returns how many versions in want (event → last version
// accepted) the stream never delivered: those skipped over (Gaps) and those
// after the last one it delivered.
func (c *Checker) Missing(want map[string]int) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.Gaps
	for k, v := range want {
		if l := c.last[k]; l < v {
			n += int64(v - l)
		}
	}
	return n
}

// seqString is the change log position in cursor, or "?".
func seqString(cursor string) string {
	if seq, ok := cursorSeq(cursor); ok {
		return strconv.FormatUint(seq, 10)
	}
	return "?"
}
