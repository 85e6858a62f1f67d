package sqlite

import "container/list"

// recentEventsBytes bounds the writer's cache of recently written events
// (ids and encoded rows, with a per-entry allowance for the bookkeeping).
const recentEventsBytes = 8 << 20

// recentEntryOverhead is what an entry costs beyond its id and row: the
// list element, the map's slot and the entry's headers.
const recentEntryOverhead = 128

// recentEvents keeps the rows (the events table's data column) of the
// events the writer committed last, bounded in bytes, least recently used
// first out. A delivery that rewrites an event reads the stored version
// first (to order versions and diff them); with the row here it is
// decoded from memory instead of queried.
//
// It is only ever used by the writer, under the writer lock, and it is
// told of every write to the events table (tx.PutEvent is the only one
// while the store is open): a transaction forgets an event's entry before
// it writes the event, keeps what it wrote to itself (tx.staged), and
// hands that over only once its COMMIT has succeeded. So an entry is
// always the row the table holds; a rolled-back write, or a transaction
// that failed to commit, leaves no entry at all, and reads of those events
// go to SQLite.
type recentEvents struct {
	max, size int
	byID      map[string]*list.Element
	lru       list.List // of *recentEntry, most recently used first
	// hits and misses count GetEvent's lookups, for tests.
	hits, misses int
}

type recentEntry struct {
	id   string
	data []byte
}

func newRecentEvents(maxBytes int) *recentEvents {
	return &recentEvents{max: maxBytes, byID: make(map[string]*list.Element)}
}

func entrySize(id string, data []byte) int { return len(id) + len(data) + recentEntryOverhead }

// get returns the row of event id if it is kept. The bytes are shared:
// callers only decode them.
func (c *recentEvents) get(id string) ([]byte, bool) {
	el, ok := c.byID[id]
	if !ok {
		c.misses++
		return nil, false
	}
	c.hits++
	c.lru.MoveToFront(el)
	return el.Value.(*recentEntry).data, true
}

// has reports whether event id's row is kept, without counting a lookup
// or touching its place in the order.
func (c *recentEvents) has(id string) bool {
	_, ok := c.byID[id]
	return ok
}

// forget drops event id's entry.
func (c *recentEvents) forget(id string) {
	if el, ok := c.byID[id]; ok {
		c.remove(el)
	}
}

// add keeps data as event id's committed row, evicting the least recently
// used entries to stay within the bound. A row too large to share the
// cache with many others is not kept.
func (c *recentEvents) add(id string, data []byte) {
	c.forget(id)
	n := entrySize(id, data)
	if n > c.max/64 {
		return
	}
	c.byID[id] = c.lru.PushFront(&recentEntry{id: id, data: data})
	c.size += n
	for c.size > c.max {
		c.remove(c.lru.Back())
	}
}

func (c *recentEvents) remove(el *list.Element) {
	e := c.lru.Remove(el).(*recentEntry)
	delete(c.byID, e.id)
	c.size -= entrySize(e.id, e.data)
}
