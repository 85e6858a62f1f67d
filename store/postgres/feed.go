package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5"

	"github.com/calsync/calsync/store"
)

// DefaultPollInterval is how often the change feed reads the change log
// when nothing woke it earlier, unless Options.PollInterval says otherwise.
const DefaultPollInterval = time.Second

// notifyChannel is the LISTEN/NOTIFY channel on which every instance hints
// that it committed changes. The payload is the newest cursor committed.
const notifyChannel = "calsync_changes"

// Bounds of the feed's work.
const (
	// feedPage is the most changes one read of the change log returns.
	feedPage = 1024
	// maxOwnRecords and maxOwnBytes bound this instance's committed changes
	// waiting for the feed. Beyond them the feed drops them and reads them
	// back from the change log: they are an optimization, never the only
	// copy.
	maxOwnRecords = 8192
	maxOwnBytes   = 32 << 20
	// listenCheck is how long the listening connection waits for a
	// notification before checking that the connection still works.
	listenCheck = 30 * time.Second
	// statementTimeout bounds the feed's own statements (NOTIFY, the
	// listener's check) so that a hung server cannot hang the feed.
	statementTimeout = 10 * time.Second
)

// feed delivers the change log to the commit hooks: every change committed
// on the database, by any instance, once, in cursor order, with no gap
// (see [DB.OnCommit]).
//
// One goroutine (run) owns delivered, the newest cursor handed to the
// hooks, and calls the hooks. It wakes:
//   - when this instance commits changes: if they follow delivered, it hands
//     them over as they are, without reading; otherwise it first reads the
//     gap before them from the change log (cursors are handed out in commit
//     order, so once this instance's commit returned, every smaller cursor
//     is committed and readable);
//   - on a notification from another instance (LISTEN/NOTIFY), and after
//     the listening connection (re)connects, to read what it missed;
//   - every poll interval, so that a lost notification costs latency, never
//     changes;
//   - after a failed read, with backoff, until a read succeeds.
type feed struct {
	db           *DB
	pollInterval time.Duration
	listen       bool
	connConfig   *pgx.ConnConfig

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// kick wakes run; what it has to do is in the fields under mu.
	kick chan struct{}

	mu sync.Mutex
	// own holds this instance's commits not yet seen by run, one slice per
	// Update or applied delivery, in cursor order.
	own        [][]store.ChangeRecord
	ownRecords int
	ownBytes   int
	// readLog asks run to read the whole log after delivered.
	readLog bool
	// pendingFirst is the first cursor of this instance's transaction being
	// committed now, 0 if none: its changes come through own, so reads of
	// the log stop before them.
	pendingFirst store.Cursor
	// notifying says a NOTIFY is under way; again, that a commit since
	// asks for one more, carrying notifyHead.
	notifying, again bool
	notifyHead       store.Cursor
	// closed stops new NOTIFY goroutines once stop began.
	closed bool

	// delivered is written by run only; others read it to skip needless
	// reads.
	delivered atomic.Uint64
}

func newFeed(db *DB, head store.Cursor, pollInterval time.Duration, listen bool, connConfig *pgx.ConnConfig) *feed {
	f := &feed{
		db:           db,
		pollInterval: pollInterval,
		listen:       listen,
		connConfig:   connConfig,
		kick:         make(chan struct{}, 1),
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.delivered.Store(uint64(head))
	f.wg.Add(1)
	go f.run()
	if listen {
		f.wg.Add(1)
		go f.listenLoop()
	}
	return f
}

// stop ends the feed's goroutines and waits for them: no hook is called
// after it returns.
func (f *feed) stop() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
}

// wake makes run look at its work soon. It never blocks.
func (f *feed) wake() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// hintRead asks run to read the change log.
func (f *feed) hintRead() {
	f.mu.Lock()
	f.readLog = true
	f.mu.Unlock()
	f.wake()
}

// committing tells the feed that this instance is about to commit a
// transaction whose changes start at cursor first; committed or abandoned
// must follow. Until then, changes read from the log stop before first, so
// that the hooks get this instance's commits as they were made (one call
// per Update or applied delivery) rather than read back from the log.
func (f *feed) committing(first store.Cursor) {
	f.mu.Lock()
	f.pendingFirst = first
	f.mu.Unlock()
}

// abandoned says that the transaction announced by committing failed to
// commit, or may have: if it did, the feed reads it from the log.
func (f *feed) abandoned() {
	f.mu.Lock()
	f.pendingFirst = 0
	f.readLog = true
	f.mu.Unlock()
	f.wake()
}

// committed hands the feed this instance's changes just committed, one
// slice per Update or applied delivery, in cursor order, and ends what
// committing announced. The caller holds the writer turn, so successive
// calls come in cursor order. It never blocks, and hints the other
// instances.
func (f *feed) committed(groups [][]store.ChangeRecord) {
	f.mu.Lock()
	f.pendingFirst = 0
	if len(groups) == 0 {
		f.mu.Unlock()
		return
	}
	for _, g := range groups {
		f.own = append(f.own, g)
		f.ownRecords += len(g)
		for _, r := range g {
			f.ownBytes += len(r.Change)
		}
	}
	if f.ownRecords > maxOwnRecords || f.ownBytes > maxOwnBytes {
		// The hooks are behind: let run read these from the log.
		f.own, f.ownRecords, f.ownBytes = nil, 0, 0
		f.readLog = true
	}
	f.mu.Unlock()
	f.wake()
	last := groups[len(groups)-1]
	f.notifyOthers(last[len(last)-1].Cursor)
}

// run is the feed's goroutine: it waits for work and does it until stop.
func (f *feed) run() {
	defer f.wg.Done()
	poll := time.NewTicker(f.pollInterval)
	defer poll.Stop()
	retry := time.NewTimer(0)
	<-retry.C
	defer retry.Stop()
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = 50*time.Millisecond, min(f.pollInterval, 5*time.Second)
	var failing error
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-f.kick:
		case <-poll.C:
			f.mu.Lock()
			f.readLog = true
			f.mu.Unlock()
		case <-retry.C:
		}
		err := f.work()
		switch {
		case err == nil:
			if failing != nil {
				f.db.log.Info("change feed reads the change log again")
				failing = nil
			}
			b.Reset()
		case f.ctx.Err() != nil:
			return
		default:
			if failing == nil {
				f.db.log.Warn("change feed cannot read the change log; retrying", "err", err)
			}
			failing = err
			retry.Reset(b.NextBackOff())
		}
	}
}

// work delivers this instance's commits handed over since the last call,
// reading the gaps before them, and then the whole log after delivered if
// asked to. On an error it leaves a read of the log pending.
func (f *feed) work() error {
	f.mu.Lock()
	own, read := f.own, f.readLog
	f.own, f.ownRecords, f.ownBytes, f.readLog = nil, 0, 0, false
	f.mu.Unlock()
	err := f.deliverOwn(own)
	if err == nil && read {
		err = f.readUpTo(store.Cursor(1<<63 - 1))
	}
	if err != nil {
		// What was not delivered is in the log: read it next time.
		f.mu.Lock()
		f.readLog = true
		f.mu.Unlock()
	}
	return err
}

// deliverOwn hands this instance's commits to the hooks, reading from the
// log first whatever committed before them and was not delivered yet.
func (f *feed) deliverOwn(own [][]store.ChangeRecord) error {
	for _, g := range own {
		first := g[0].Cursor
		if delivered := f.cursor(); first > delivered+1 {
			if err := f.readUpTo(first - 1); err != nil {
				return err
			}
		}
		// A read may have delivered the group, or the start of it (a page
		// can end inside a commit).
		delivered := f.cursor()
		for len(g) > 0 && g[0].Cursor <= delivered {
			g = g[1:]
		}
		if len(g) == 0 {
			continue
		}
		if g[0].Cursor != delivered+1 {
			// The log did not hold the changes before this commit (not
			// expected: cursors are gap-free and handed out in commit
			// order). Never deliver across a gap: read the log instead.
			f.db.log.Error("change feed: commit does not follow the delivered changes; reading the log",
				"delivered", delivered, "commit_first", g[0].Cursor)
			f.hintRead()
			return nil
		}
		f.deliver(g)
	}
	return nil
}

// readUpTo reads the change log after delivered and hands it to the hooks,
// page by page, until it has delivered target or the log has no more.
// Changes compacted away before the feed read them cannot be delivered: it
// says so in the log and continues after the compacted ones, and the hooks
// see cursors jump (the watch hub then sends its streams to the change
// log, which fails them with store.ErrCompacted, so that no watcher skips
// changes silently).
func (f *feed) readUpTo(target store.Cursor) error {
	for f.cursor() < target {
		after := f.cursor()
		recs, err := f.db.ReadChanges(f.ctx, after, feedPage)
		if errors.Is(err, store.ErrCompacted) {
			b, err := f.db.ChangeBounds(f.ctx)
			if err != nil {
				return err
			}
			if b.Compacted <= after {
				return fmt.Errorf("postgres: change feed: reading after %d: %w, yet the log is compacted only up to %d",
					after, store.ErrCompacted, b.Compacted)
			}
			f.db.log.Warn("change feed fell behind the change log's compaction: changes were removed before this instance read them; watchers behind them must resume from a newer cursor or list again",
				"delivered", after, "compacted", b.Compacted)
			f.delivered.Store(uint64(b.Compacted))
			continue
		}
		if err != nil {
			return err
		}
		more := len(recs) == feedPage
		// Stop before the target, and before this instance's commits not
		// handed over yet (see committing): they come through own.
		limit := f.ownFirst()
		for i, r := range recs {
			if r.Cursor > target {
				recs, more = recs[:i], false
				break
			}
			if limit != 0 && r.Cursor >= limit {
				// Other instances may have committed after this one's
				// commit: read on once it is handed over (committed or
				// abandoned wakes run), not before, or run would spin.
				f.mu.Lock()
				f.readLog = true
				f.mu.Unlock()
				recs, more = recs[:i], false
				break
			}
		}
		if len(recs) == 0 {
			return nil
		}
		// One call per commit, as far as the log tells them apart: the
		// changes of one transaction share their commit time.
		for len(recs) > 0 {
			n := 1
			for n < len(recs) && recs[n].CommitTime.Equal(recs[0].CommitTime) {
				n++
			}
			f.deliver(recs[:n:n])
			recs = recs[n:]
		}
		if !more {
			return nil
		}
	}
	return nil
}

// ownFirst returns the first cursor of this instance's commits that run
// has not taken yet (committing, or queued in own), or 0 if there are none.
func (f *feed) ownFirst() store.Cursor {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.own) > 0 {
		return f.own[0][0].Cursor
	}
	return f.pendingFirst
}

// cursor returns delivered.
func (f *feed) cursor() store.Cursor { return store.Cursor(f.delivered.Load()) }

// deliver calls every hook with recs, which follow delivered.
func (f *feed) deliver(recs []store.ChangeRecord) {
	f.db.hooksMu.RLock()
	hooks := f.db.hooks
	f.db.hooksMu.RUnlock()
	for _, h := range hooks {
		h(recs)
	}
	f.delivered.Store(uint64(recs[len(recs)-1].Cursor))
}

// notifyOthers tells the other instances that changes up to head were
// committed, with a NOTIFY of its own, outside any write transaction: a
// NOTIFY inside one would serialize every commit on the server's
// notification queue lock. At most one NOTIFY is under way per instance; a
// commit meanwhile leaves one more to send, carrying the newest head.
func (f *feed) notifyOthers(head store.Cursor) {
	if !f.listen {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notifyHead = max(f.notifyHead, head)
	if f.closed {
		return
	}
	if f.notifying {
		f.again = true
		return
	}
	f.notifying = true
	f.wg.Add(1)
	go f.sendNotifies()
}

// sendNotifies sends NOTIFYs until no commit asks for another.
func (f *feed) sendNotifies() {
	defer f.wg.Done()
	for {
		f.mu.Lock()
		head := f.notifyHead
		f.again = false
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(f.ctx, statementTimeout)
		_, err := f.db.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, strconv.FormatUint(uint64(head), 10))
		cancel()
		if err != nil && f.ctx.Err() == nil {
			// The others find the changes at their next poll.
			f.db.log.Debug("change feed: notify failed", "err", err)
		}
		f.mu.Lock()
		if !f.again || f.ctx.Err() != nil {
			f.notifying = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
	}
}

// listenLoop keeps a connection of its own (not from the pool) listening
// for the other instances' notifications, reconnecting with backoff after
// an error (the server restarting, say), until stop.
func (f *feed) listenLoop() {
	defer f.wg.Done()
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = 100*time.Millisecond, 5*time.Second
	var failing error
	for {
		connected, err := f.listenOnce()
		if f.ctx.Err() != nil {
			return
		}
		if connected {
			b.Reset()
		}
		if failing == nil {
			f.db.log.Warn("change feed: listening for other instances' commits failed; reconnecting (they are polled meanwhile)", "err", err)
		}
		failing = err
		select {
		case <-f.ctx.Done():
			return
		case <-time.After(b.NextBackOff()):
		}
	}
}

// listenOnce connects, listens and wakes the feed on every notification
// until an error. connected reports whether LISTEN succeeded.
func (f *feed) listenOnce() (connected bool, err error) {
	ctx, cancel := context.WithTimeout(f.ctx, statementTimeout)
	conn, err := pgx.ConnectConfig(ctx, f.connConfig)
	if err == nil {
		_, err = conn.Exec(ctx, `LISTEN `+notifyChannel)
	}
	cancel()
	if conn != nil {
		defer conn.Close(context.Background())
	}
	if err != nil {
		return false, err
	}
	// Commits made while no connection listened were not notified: read.
	f.hintRead()
	for {
		ctx, cancel := context.WithTimeout(f.ctx, listenCheck)
		n, err := conn.WaitForNotification(ctx)
		cancel()
		switch {
		case err == nil:
			head, perr := strconv.ParseUint(n.Payload, 10, 64)
			if perr != nil || store.Cursor(head) > f.cursor() {
				f.hintRead()
			}
		case f.ctx.Err() != nil:
			return true, err
		case errors.Is(err, context.DeadlineExceeded):
			// Quiet for a while: make sure the connection still works,
			// since a connection cut without a word would wait for ever.
			ctx, cancel := context.WithTimeout(f.ctx, statementTimeout)
			_, err = conn.Exec(ctx, `SELECT 1`)
			cancel()
			if err != nil {
				return true, err
			}
		default:
			return true, err
		}
	}
}
