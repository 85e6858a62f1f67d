package ingest

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/calsync/calsync/store"
)

// scheduler hands deliveries to workers so that deliveries with the same
// ordering key (the same calendar) are processed one at a time, in inbox
// order, while different keys proceed in parallel. A delivery waiting to be
// retried holds back only its own key.
//
// Keys are split into lanes (see [lane]), each served by its own workers:
// a worker takes keys of its lane only, so a lane whose deliveries wait on
// a remote API never holds a worker another lane could use.
//
// Each lane holds at most laneItems deliveries and laneBytes of them (see
// [deliverySize]), queued or in flight, except that an empty lane always
// takes one delivery, however large; so the scheduler holds at most
// numLanes times that. What does not fit stays in the inbox:
// [scheduler.addAll] stops a lane at its first delivery that does not fit,
// so the caller continues that lane from there, in inbox order, once onRoom
// says there is room again. Bounding lanes apart means a lane whose
// deliveries pile up (Recall down for an hour) never keeps another lane's
// deliveries in the inbox.
type scheduler struct {
	mu     sync.Mutex
	lanes  [numLanes]laneQueue
	queues map[string]*keyQueue
	known  map[int64]string // every queued or in-flight delivery, by id → key
	closed bool

	laneItems int
	laneBytes int64
	onRoom    func() // called (without blocking) when a starved lane has room
	laneOf    func(store.Delivery) lane
}

// lane is a class of deliveries with workers of its own.
type lane int

const (
	// laneLocal holds deliveries processed from their own body (postpress).
	laneLocal lane = iota
	// laneRemote holds deliveries that wait on a provider's API and its
	// rate limits (Recall).
	laneRemote
	numLanes
)

// laneQueue is a lane's keys whose head can be processed now, in the order
// they became ready, the condition its workers wait on, and what the lane
// holds.
type laneQueue struct {
	ready []string
	cond  *sync.Cond
	items int   // deliveries queued or in flight
	bytes int64 // sum of their deliverySize
	// starved says deliveries of the lane were left in the inbox for lack
	// of room.
	starved bool
}

type keyQueue struct {
	items []store.Delivery
	lane  lane
	// busy is set while a worker holds the key or its head waits for a retry.
	busy bool
	// inFlight is how many leading items a worker holds now.
	inFlight int
}

// newScheduler returns a scheduler holding at most maxItems deliveries and
// maxBytes of them, each lane an equal share.
func newScheduler(maxItems int, maxBytes int64, laneOf func(store.Delivery) lane, onRoom func()) *scheduler {
	s := &scheduler{queues: map[string]*keyQueue{}, known: map[int64]string{},
		laneItems: max(1, maxItems/int(numLanes)), laneBytes: max(1, maxBytes/int64(numLanes)), laneOf: laneOf, onRoom: onRoom}
	for i := range s.lanes {
		s.lanes[i].cond = sync.NewCond(&s.mu)
	}
	return s
}

// deliverySize is what a queued delivery counts against the byte bound: its
// body and its other variable-length fields.
func deliverySize(d store.Delivery) int64 {
	return int64(len(d.Body) + len(d.DedupKey) + len(d.MessageID) + len(d.EventType) + len(d.OrderingKey) + len(d.LastError))
}

// orderingKey is the key a delivery is serialized under. Deliveries that
// name no calendar have no order to keep.
func orderingKey(d store.Delivery) string {
	if d.OrderingKey != "" {
		return d.OrderingKey
	}
	return "delivery:" + strconv.FormatInt(d.ID, 10)
}

// room reports which lanes have room (open) and how many more deliveries
// of up to rowBytes each certainly fit in them together, at most limit:
// the page size to read from the inbox next, so that the page itself stays
// within the bound. A lane without room is marked starved.
func (s *scheduler) room(rowBytes int64, limit int) (n int, open [numLanes]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var items, bytes int64
	for i := range s.lanes {
		l := &s.lanes[i]
		fit := min(int64(s.laneItems-l.items), (s.laneBytes-l.bytes)/max(rowBytes, 1))
		if fit <= 0 && l.items == 0 {
			fit = 1
		}
		if fit <= 0 {
			l.starved = true
			continue
		}
		open[i] = true
		items += int64(s.laneItems - l.items)
		bytes += s.laneBytes - l.bytes
	}
	n = int(max(0, min(int64(limit), items, bytes/max(rowBytes, 1))))
	for _, o := range open {
		if o {
			n = max(n, 1)
		}
	}
	return n, open
}

// addAll queues, in order, the deliveries of ds that are not already
// queued or in flight, for the lanes open says have room. A lane stops at
// its first delivery that does not fit: that delivery and the lane's later
// ones in ds are left alone, and open says the lane is closed. through[l]
// says how many deliveries of ds lane l went through: the lane continues
// after ds[through[l]-1]. The deliveries are added under one lock, so a
// worker sees a page of deliveries whole and coalesces everything it can.
func (s *scheduler) addAll(ds []store.Delivery, now time.Time, open *[numLanes]bool) (through [numLanes]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, d := range ds {
		if l := s.laneOf(d); open[l] && !s.addLocked(d, l, now) {
			open[l] = false
			s.lanes[l].starved = true
		}
		for l := range open {
			if open[l] {
				through[l] = i + 1
			}
		}
	}
	return through
}

// addLocked queues d, of lane l, unless it is already queued or in flight,
// and reports false if d does not fit. The caller holds s.mu.
func (s *scheduler) addLocked(d store.Delivery, l lane, now time.Time) bool {
	if _, ok := s.known[d.ID]; ok || s.closed {
		return true
	}
	size := deliverySize(d)
	lq := &s.lanes[l]
	if lq.items > 0 && (lq.items >= s.laneItems || lq.bytes+size > s.laneBytes) {
		return false
	}
	key := orderingKey(d)
	s.known[d.ID] = key
	lq.items++
	lq.bytes += size
	q := s.queues[key]
	if q == nil {
		q = &keyQueue{lane: l}
		s.queues[key] = q
	}
	q.items = append(q.items, d)
	if len(q.items) == 1 && !q.busy {
		if wait := d.NextAttemptTime.Sub(now); wait > 0 {
			// Due later (a retry recorded before a restart): hold the key.
			q.busy = true
			time.AfterFunc(wait, func() { s.release(key, q) })
		} else {
			s.markReady(key, q)
		}
	}
	return true
}

func (s *scheduler) markReady(key string, q *keyQueue) {
	l := &s.lanes[q.lane]
	l.ready = append(l.ready, key)
	l.cond.Signal()
}

// next blocks until a key of lane l is ready and returns its leading
// deliveries: the head, plus the deliveries after it that coalesce with it
// (see coalesce). It returns ok = false once the scheduler is closed.
func (s *scheduler) next(l lane, coalesce func(head, d store.Delivery) bool) (key string, batch []store.Delivery, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lq := &s.lanes[l]
	for len(lq.ready) == 0 && !s.closed {
		lq.cond.Wait()
	}
	if s.closed {
		return "", nil, false
	}
	key = lq.ready[0]
	lq.ready = lq.ready[1:]
	q := s.queues[key]
	q.busy, q.inFlight = true, 1
	q.extendLocked(coalesce)
	return key, slices.Clone(q.items[:q.inFlight]), true
}

// join adds to the batch in flight for key the deliveries queued behind it
// since next returned it, as far as they coalesce with its head, and
// returns them; the caller's batch is then the longer one (finish and
// dropQueued count it so). Only the worker holding key calls join.
func (s *scheduler) join(key string, coalesce func(head, d store.Delivery) bool) []store.Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[key]
	if q == nil || q.inFlight == 0 {
		return nil // dropped meanwhile (see drop)
	}
	from := q.inFlight
	q.extendLocked(coalesce)
	return slices.Clone(q.items[from:q.inFlight])
}

// extendLocked adds to q's batch in flight the queued deliveries right
// after it that coalesce with its head. The caller holds the scheduler's
// lock.
func (q *keyQueue) extendLocked(coalesce func(head, d store.Delivery) bool) {
	for _, d := range q.items[q.inFlight:] {
		if !coalesce(q.items[0], d) {
			return
		}
		q.inFlight++
	}
}

// finish removes the first n deliveries of key (they are done, ignored or
// dead) and makes the key available again. Once a starved lane is down to
// half its bounds, it calls onRoom, so that the deliveries left in the
// inbox are read without waiting for the next rescan. It reports whether
// that left key with nothing queued.
func (s *scheduler) finish(key string, n int) (empty bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[key]
	if q == nil {
		return true // dropped meanwhile (see drop)
	}
	s.forgetLocked(q.lane, q.items[:n])
	q.items = q.items[n:]
	q.busy, q.inFlight = false, 0
	if len(q.items) == 0 {
		delete(s.queues, key)
		return true
	}
	s.markReady(key, q)
	return false
}

// forgetLocked stops counting ds, deliveries of lane l the caller takes
// out of their queue, calling onRoom when that gives a starved lane room.
// The caller holds s.mu.
func (s *scheduler) forgetLocked(l lane, ds []store.Delivery) {
	lq := &s.lanes[l]
	for _, d := range ds {
		delete(s.known, d.ID)
		lq.items--
		lq.bytes -= deliverySize(d)
	}
	if lq.starved && lq.items <= s.laneItems/2 && lq.bytes <= s.laneBytes/2 {
		lq.starved = false
		s.onRoom()
	}
}

// drop forgets every delivery of key, queued or in flight: the process no
// longer works on it. The worker holding key, if any, must be the caller,
// since it must not finish the key afterwards.
func (s *scheduler) drop(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(key)
}

// dropQueued drops what of key no worker holds: all of it (see drop) if
// no worker holds the key, and otherwise the deliveries queued behind the
// worker's batch. It reports whether key is no longer queued at all.
func (s *scheduler) dropQueued(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[key]
	if q == nil || q.inFlight == 0 {
		s.dropLocked(key)
		return true
	}
	s.forgetLocked(q.lane, q.items[q.inFlight:])
	q.items = q.items[:q.inFlight]
	return false
}

func (s *scheduler) dropLocked(key string) {
	q := s.queues[key]
	if q == nil {
		return
	}
	s.forgetLocked(q.lane, q.items)
	delete(s.queues, key)
	lq := &s.lanes[q.lane]
	for i, k := range lq.ready {
		if k == key {
			lq.ready = append(lq.ready[:i], lq.ready[i+1:]...)
			break
		}
	}
}

// holds reports whether deliveries of key are queued or in flight.
func (s *scheduler) holds(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queues[key] != nil
}

// retryAfter keeps key's head in place and makes the key available again
// after wait, updating the head's recorded attempt count.
func (s *scheduler) retryAfter(key string, attempts int, wait time.Duration) {
	s.mu.Lock()
	q := s.queues[key]
	q.items[0].Attempts, q.inFlight = attempts, 0
	s.mu.Unlock()
	time.AfterFunc(wait, func() { s.release(key, q) })
}

// release makes key available again after a wait, if q is still its
// queue: a key dropped (see drop) and queued again since is not this
// wait's to release.
func (s *scheduler) release(key string, q *keyQueue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queues[key] == q && !s.closed {
		q.busy = false
		s.markReady(key, q)
	}
}

// pending is how many deliveries are queued or in flight.
func (s *scheduler) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.known)
}

// queuedBytes is the size of the deliveries queued or in flight.
func (s *scheduler) queuedBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, l := range s.lanes {
		n += l.bytes
	}
	return n
}

// close wakes every waiting worker; next returns ok = false from then on.
func (s *scheduler) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	for i := range s.lanes {
		s.lanes[i].cond.Broadcast()
	}
}

// closeOnDone closes the scheduler when ctx ends.
func (s *scheduler) closeOnDone(ctx context.Context) {
	<-ctx.Done()
	s.close()
}
