package sqlite

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/calsync/calsync/store/sqlite/walvfs"
)

// Durability: commits whose WAL sync runs beside the next transaction.
//
// Under synchronous=FULL a commit used to return only after the WAL's
// fsync, and the writer waited for it before it could start the next
// transaction: at a few deliveries per commit, the disk's wait was most
// of the writer's time, and every webhook queued behind it. Now the
// writer's connection opens the WAL through walvfs.PipeName and commits
// with the sync deferred (walvfs.Log.Defer): the frames are written, and
// the syncer goroutine makes them durable while the writer runs the next
// transaction. What depended on the commit — the answers to its callers,
// the commit hooks, Update's return — runs on the syncer once the sync
// covering it has returned, in commit order.
//
// A commit is visible to readers before it is durable (SQLite publishes
// it in the WAL index when the commit returns), so every read waits, before
// it returns anything, until the commits it may have seen are durable:
// nobody outside the store ever sees a write a power loss could take back.
// A reader waits at most for a sync under way; with no write under way it
// does not wait at all.
//
// The writer runs at most one transaction ahead of the syncer, so commits
// stay batches of what arrived during a sync rather than one per delivery.
//
// A failed sync stops the store's writing for good: the commits it was to
// cover may or may not be on disk, and retrying cannot tell (PostgreSQL
// stops for the same reason). Their callers, every later write and every
// read waiting for them get the error; restarting the process recovers
// what the WAL holds.
type syncer struct {
	// log is the writer's WAL, synced here; nil when commits sync
	// themselves (synchronous=NORMAL, where nothing syncs at commit): then
	// a commit is as durable as it gets when it returns, and what waits
	// for it runs at once, on the writer's goroutine.
	log *walvfs.Log
	// sync is log.Sync, replaceable by tests.
	sync func() error

	// visible is the number of the last commit readers may see (taken just
	// before its COMMIT); durable the last one known on disk. Commits are
	// numbered by the writer, under the writer lock.
	visible, durable atomic.Uint64
	// waiting counts the calls blocked in waitFor, for tests.
	waiting atomic.Int32

	// flushMu lets one flush run at a time.
	flushMu sync.Mutex

	mu sync.Mutex
	// committed is the last commit whose COMMIT has returned; then are
	// the completions waiting for it to be durable, in commit order.
	committed uint64
	then      []func(error)
	// failed is the sync error that stopped the store.
	failed error
	// moved is closed (and replaced) when durable moves or failed is set.
	moved chan struct{}
	// wake nudges the loop; stop ends it once everything is synced; done
	// closes when it has ended.
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// maxUnsynced is how many commits the writer may have waiting for their
// sync when it starts a transaction.
const maxUnsynced = 1

func newSyncer(log *walvfs.Log) *syncer {
	s := &syncer{
		log:   log,
		moved: make(chan struct{}),
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if log == nil {
		close(s.done)
		return s
	}
	s.sync = log.Sync
	go s.loop()
	return s
}

// commit runs fn, the COMMIT of the writer's transaction, deferring its
// sync, and returns fn's error. The caller holds the writer lock, and
// queues what depends on the commit with whenDurable.
func (s *syncer) commit(fn func() error) error {
	seq := s.visible.Load() + 1
	// Readers that start now may see the commit: they wait for it.
	s.visible.Store(seq)
	var err error
	if s.log != nil {
		err = s.log.Defer(fn)
	} else {
		err = fn()
	}
	// A failed COMMIT is numbered all the same, so that readers who
	// took its number are not kept waiting.
	s.mu.Lock()
	s.committed = seq
	s.mu.Unlock()
	if s.log == nil {
		s.durable.Store(seq)
	}
	return err
}

// whenDurable runs fn once every commit so far is durable, with nil, or
// with the error that stopped the store (at once, when commits sync
// themselves). Calls made in commit order run in that order. fn must not
// block. It runs in the next flush: the writer, after queueing, either
// flushes itself or nudges the loop to.
func (s *syncer) whenDurable(fn func(error)) {
	if s.log == nil {
		fn(nil)
		return
	}
	s.mu.Lock()
	s.then = append(s.then, fn)
	s.mu.Unlock()
}

// waitDurable waits until every commit so far is durable.
func (s *syncer) waitDurable(ctx context.Context) error {
	s.mu.Lock()
	seq := s.committed
	s.mu.Unlock()
	return s.waitFor(ctx, seq)
}

// waitVisible waits until every commit a read starting before now may have
// seen is durable.
func (s *syncer) waitVisible(ctx context.Context) error {
	return s.waitFor(ctx, s.visible.Load())
}

// waitBacklog waits, before the writer starts a transaction, until at most
// maxUnsynced commits wait for their sync. The caller holds the writer lock.
func (s *syncer) waitBacklog() error {
	if seq := s.visible.Load(); seq > maxUnsynced {
		return s.waitFor(context.Background(), seq-maxUnsynced)
	}
	return s.err()
}

func (s *syncer) waitFor(ctx context.Context, seq uint64) error {
	if s.log == nil {
		return nil
	}
	for {
		if s.durable.Load() >= seq {
			return nil
		}
		s.mu.Lock()
		moved, failed := s.moved, s.failed
		s.mu.Unlock()
		if failed != nil {
			return failed
		}
		if s.durable.Load() >= seq {
			return nil
		}
		s.nudge() // whoever committed may have left the sync to the loop
		s.waiting.Add(1)
		select {
		case <-moved:
			s.waiting.Add(-1)
		case <-ctx.Done():
			s.waiting.Add(-1)
			return fmt.Errorf("sqlite: waiting for the write-ahead log's sync: %w", ctx.Err())
		}
	}
}

// err returns the error that stopped the store's writing, if any.
func (s *syncer) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

func (s *syncer) nudge() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// loop syncs the WAL whenever it is nudged and commits wait for it, then
// runs what waited for them.
func (s *syncer) loop() {
	defer close(s.done)
	for {
		for s.flush() {
		}
		select {
		case <-s.wake:
		case <-s.stop:
			for s.flush() {
			}
			return
		}
	}
}

// flush syncs the WAL if commits wait for it and runs what waits for
// them, and reports whether there was anything to do. Flushes run one at a
// time, each taking everything queued when it starts, so completions run
// in the order they were queued. The writer's goroutine flushes itself
// when nothing waits for the writer (see commitLoop): the sync then starts
// at once, instead of when the loop's goroutine gets a core.
func (s *syncer) flush() bool {
	if s.log == nil {
		return false
	}
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	upTo, then, failed := s.committed, s.then, s.failed
	s.then = nil
	s.mu.Unlock()
	synced := false
	if upTo > s.durable.Load() && failed == nil {
		err := s.sync()
		s.mu.Lock()
		if err != nil {
			s.failed = fmt.Errorf("sqlite: the store stopped writing: %w", err)
			failed = s.failed
		} else {
			s.durable.Store(upTo)
		}
		close(s.moved)
		s.moved = make(chan struct{})
		s.mu.Unlock()
		synced = true
	}
	for _, fn := range then {
		fn(failed)
	}
	return synced || len(then) > 0
}

// close syncs what is left, runs what waits for it, and stops the loop.
// No commit may start after close is called.
func (s *syncer) close() error {
	if s.log != nil {
		close(s.stop)
	}
	<-s.done
	return s.err()
}
