package ingest

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/calsync/calsync/store"
)

// scheduler hands deliveries to workers so that deliveries with the same
// ordering key (the same calendar) are processed one at a time, in inbox
// order, while different keys proceed in parallel. A delivery waiting to be
// retried holds back only its own key.
type scheduler struct {
	mu     sync.Mutex
	cond   *sync.Cond
	queues map[string]*keyQueue
	ready  []string         // keys whose head can be processed now
	known  map[int64]string // every queued or in-flight delivery, by id → key
	closed bool
}

type keyQueue struct {
	items []store.Delivery
	// busy is set while a worker holds the key or its head waits for a retry.
	busy bool
}

func newScheduler() *scheduler {
	s := &scheduler{queues: map[string]*keyQueue{}, known: map[int64]string{}}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// orderingKey is the key a delivery is serialized under. Deliveries that
// name no calendar have no order to keep.
func orderingKey(d store.Delivery) string {
	if d.OrderingKey != "" {
		return d.OrderingKey
	}
	return "delivery:" + strconv.FormatInt(d.ID, 10)
}

// addAll queues deliveries that are not already queued or in flight. They
// are added under one lock, so a worker sees a page of deliveries whole and
// coalesces everything it can.
func (s *scheduler) addAll(ds []store.Delivery, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range ds {
		s.addLocked(d, now)
	}
}

// addLocked queues d unless it is already queued or in flight. The caller
// holds s.mu.
func (s *scheduler) addLocked(d store.Delivery, now time.Time) {
	if _, ok := s.known[d.ID]; ok || s.closed {
		return
	}
	key := orderingKey(d)
	s.known[d.ID] = key
	q := s.queues[key]
	if q == nil {
		q = &keyQueue{}
		s.queues[key] = q
	}
	q.items = append(q.items, d)
	if len(q.items) == 1 && !q.busy {
		if wait := d.NextAttemptTime.Sub(now); wait > 0 {
			// Due later (a retry recorded before a restart): hold the key.
			q.busy = true
			time.AfterFunc(wait, func() { s.release(key) })
		} else {
			s.markReady(key)
		}
	}
}

func (s *scheduler) markReady(key string) {
	s.ready = append(s.ready, key)
	s.cond.Signal()
}

// next blocks until a key is ready and returns its leading deliveries: the
// head, plus the deliveries after it that coalesce with it (see coalesce).
// It returns ok = false once the scheduler is closed.
func (s *scheduler) next(coalesce func(head, d store.Delivery) bool) (key string, batch []store.Delivery, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.ready) == 0 && !s.closed {
		s.cond.Wait()
	}
	if s.closed {
		return "", nil, false
	}
	key = s.ready[0]
	s.ready = s.ready[1:]
	q := s.queues[key]
	q.busy = true
	batch = []store.Delivery{q.items[0]}
	for _, d := range q.items[1:] {
		if !coalesce(q.items[0], d) {
			break
		}
		batch = append(batch, d)
	}
	return key, batch, true
}

// finish removes the first n deliveries of key (they are done, ignored or
// dead) and makes the key available again.
func (s *scheduler) finish(key string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[key]
	for _, d := range q.items[:n] {
		delete(s.known, d.ID)
	}
	q.items = q.items[n:]
	q.busy = false
	if len(q.items) == 0 {
		delete(s.queues, key)
		return
	}
	s.markReady(key)
}

// retryAfter keeps key's head in place and makes the key available again
// after wait, updating the head's recorded attempt count.
func (s *scheduler) retryAfter(key string, attempts int, wait time.Duration) {
	s.mu.Lock()
	s.queues[key].items[0].Attempts = attempts
	s.mu.Unlock()
	time.AfterFunc(wait, func() { s.release(key) })
}

func (s *scheduler) release(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.queues[key]; q != nil && !s.closed {
		q.busy = false
		s.markReady(key)
	}
}

// pending is how many deliveries are queued or in flight.
func (s *scheduler) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.known)
}

// close wakes every waiting worker; next returns ok = false from then on.
func (s *scheduler) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cond.Broadcast()
}

// closeOnDone closes the scheduler when ctx ends.
func (s *scheduler) closeOnDone(ctx context.Context) {
	<-ctx.Done()
	s.close()
}
