package watch

import (
	"sort"

	"github.com/calsync/calsync/store"
)

// tail is the in-memory end of the change log: the newest committed changes
// in cursor order, in a ring of fixed capacity whose entries together hold at
// most maxBytes. It promises that every change with a cursor greater than
// base and at most head is held, so a stream positioned at or after base is
// served from memory and one before base reads the change log instead.
// Evicting moves base forward, so a bound (in changes or in bytes) only ever
// sends more streams to the change log: it never loses a change.
type tail struct {
	ring  []*entry
	start int // index of the oldest entry
	n     int // entries held
	// bytes is the memory the held entries take (see [entry.memSize]),
	// at most maxBytes.
	bytes, maxBytes int64
	// base is the newest cursor known to be before every held entry; head
	// is the newest cursor the tail has seen.
	base, head store.Cursor
	ready      bool
	// gaps counts the pushes that did not follow head (see push).
	gaps uint64
}

func newTail(capacity int, maxBytes int64) tail {
	return tail{ring: make([]*entry, capacity), maxBytes: maxBytes}
}

// at returns the i-th oldest held entry.
func (t *tail) at(i int) *entry { return t.ring[(t.start+i)%len(t.ring)] }

// init sets the tail's position from the change log's head when the hub
// starts. Commits the hook reported before that are kept: they are newer.
func (t *tail) init(head store.Cursor) {
	if t.ready {
		return
	}
	t.ready = true
	if t.n == 0 {
		t.base, t.head = head, head
	}
}

// push appends a newly committed change, evicting the oldest while the ring
// is full or the entries take more than maxBytes, and reports whether it
// did. A change larger than maxBytes on its own is evicted at once: streams
// read it from the change log. Changes at or before head were already seen (or
// predate the hub) and are ignored.
//
// Cursors are gap-free, so a change that does not follow head means the
// store could not report the changes between (they were compacted away
// before a shared store's feed read them): the tail then drops what it
// holds and starts after the gap, so that every stream behind it reads the
// change log, which tells it what is missing, instead of skipping it.
func (t *tail) push(e *entry) bool {
	if t.n == 0 && !t.ready {
		// The first commit after the hook was registered: every newer
		// change will be reported, every older one has a smaller cursor.
		t.ready = true
		t.base, t.head = e.cursor-1, e.cursor-1
	}
	if e.cursor <= t.head {
		return false
	}
	if e.cursor != t.head+1 {
		for t.n > 0 {
			t.evictOldest()
		}
		t.base, t.head = e.cursor-1, e.cursor-1
		t.gaps++
	}
	if t.n == len(t.ring) {
		t.evictOldest()
	}
	t.ring[(t.start+t.n)%len(t.ring)] = e
	t.n++
	t.bytes += e.memSize()
	t.head = e.cursor
	for t.bytes > t.maxBytes {
		t.evictOldest()
	}
	return true
}

// grow counts n more bytes held by e (its JSON, encoded after it was
// pushed), evicting the oldest entries while the tail is over maxBytes. An
// entry the tail no longer holds is not counted.
func (t *tail) grow(e *entry, n int64) {
	if e.cursor <= t.base || e.cursor > t.head {
		return
	}
	e.shared.bytes += n
	t.bytes += n
	for t.bytes > t.maxBytes {
		t.evictOldest()
	}
}

// evictOldest drops the oldest held entry; base moves up to its cursor.
func (t *tail) evictOldest() {
	old := t.ring[t.start]
	t.base = old.cursor
	t.bytes -= old.memSize()
	t.ring[t.start] = nil
	t.start = (t.start + 1) % len(t.ring)
	t.n--
}

// after appends to dst up to max held entries with cursors greater than pos.
// ok is false when pos is before base: the tail cannot tell what came right
// after pos, and the caller must read the change log.
func (t *tail) after(pos store.Cursor, dst []*entry, max int) (_ []*entry, ok bool) {
	if !t.ready || pos < t.base {
		return dst, false
	}
	i := sort.Search(t.n, func(i int) bool { return t.at(i).cursor > pos })
	for ; i < t.n && max > 0; i, max = i+1, max-1 {
		dst = append(dst, t.at(i))
	}
	return dst, true
}
