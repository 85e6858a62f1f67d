package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/handoff"
	"github.com/calsync/calsync/store/internal/rowcodec"
)

const (
	statePending = int32(calsyncv1.DeliveryState_DELIVERY_STATE_PENDING)
	stateDone    = int32(calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
	stateIgnored = int32(calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED)
	stateDead    = int32(calsyncv1.DeliveryState_DELIVERY_STATE_DEAD)
)

// notDone is the term of deliveries_unfinished_by_state, the index of the
// deliveries that are not DONE (migration 0005): a query that reads it
// must hold this very term, or SQLite will not use the partial index.
var notDone = fmt.Sprintf("state <> %d", stateDone)

// enqueueRequest is one Enqueue call waiting for the group committer.
type enqueueRequest struct {
	ctx  context.Context
	d    store.NewDelivery
	done chan enqueueResult // buffered: the committer never waits for a caller
	// apply, if set, processes the delivery in its transaction; applyErr
	// is set once it failed, after which the delivery is stored PENDING.
	apply    store.ApplyFunc
	applyErr error
	// state moves from queued to taken (by a transaction) or abandoned (by
	// its caller, whose ctx ended first), never both.
	state handoff.State
}

type enqueueResult struct {
	id    int64
	dup   bool
	state int32
	err   error
}

// Enqueue commits d durably and returns its id, or the id of the delivery
// stored under the same provider and dedup key within the dedupe window,
// with duplicate set.
//
// Concurrent calls are committed together: a single committer goroutine
// takes every request waiting (up to Options.MaxBatch), writes them in one
// transaction and answers them all once its commit is durable, so that many
// webhooks share one fsync; the next batch is written while that fsync
// runs (see durable.go). A call whose ctx ends while it waits for the writer
// withdraws its delivery and returns ctx's error; once the committer holds
// the writer and has taken the delivery into its transaction, the call
// waits for that commit and reports its outcome.
func (db *DB) Enqueue(ctx context.Context, d store.NewDelivery) (int64, bool, error) {
	r := db.enqueueOne(ctx, d, nil)
	return r.id, r.dup, r.err
}

// EnqueueApply commits d as Enqueue does and processes it with apply in
// the same group commit, as [store.ApplyingInbox] describes. A batch
// holding deliveries with apply runs them inside one savepoint: when one
// apply fails, the batch rolls back to it and runs again with that
// delivery stored PENDING, so no delivery pays for a savepoint of its own.
func (db *DB) EnqueueApply(ctx context.Context, d store.NewDelivery, apply store.ApplyFunc) (store.Enqueued, error) {
	r := db.enqueueOne(ctx, d, apply)
	if r.err != nil {
		return store.Enqueued{}, r.err
	}
	return store.Enqueued{ID: r.id, Duplicate: r.dup, State: calsyncv1.DeliveryState(r.state)}, nil
}

var _ store.ApplyingInbox = (*DB)(nil)

// enqueueOne queues d for the group committer and waits for its outcome.
func (db *DB) enqueueOne(ctx context.Context, d store.NewDelivery, apply store.ApplyFunc) enqueueResult {
	if d.Provider == "" || d.DedupKey == "" {
		return enqueueResult{err: fmt.Errorf("sqlite: delivery needs a provider and a dedup key: %w", store.ErrInvalidArgument)}
	}
	if err := db.enter(); err != nil {
		return enqueueResult{err: err}
	}
	defer db.leave()
	if d.ReceiveTime.IsZero() {
		d.ReceiveTime = db.now()
	}
	req := &enqueueRequest{ctx: ctx, d: d, apply: apply, done: make(chan enqueueResult, 1)}
	r, err := handoff.Submit(ctx, db.enqueue, req, &req.state, req.done)
	if err != nil {
		return enqueueResult{err: fmt.Errorf("sqlite: enqueue: %w", err)}
	}
	return r
}

// commitLoop is the group committer. It runs until Close closes the queue,
// and answers every request queued before that.
//
// A batch is what has queued by the time the committer holds the writer
// and the previous commit's sync is done: requests that arrive while either
// is awaited join this commit instead of waiting for the next one. After a
// large batch, the committer may also wait briefly for the rest of a wave
// (see wave).
func (db *DB) commitLoop() {
	defer close(db.committerDone)
	batch := make([]*enqueueRequest, 0, db.maxBatch)
	w := newWave(db.lingerFor, db.waveGap)
	for req := range db.enqueue {
		// The committer waits for the writer without a deadline: it serves
		// many callers, and each of them stops waiting when its own ctx ends.
		db.wlock <- struct{}{}
		// A failed sync fails the commit, which reports it to the batch.
		_ = db.sync.waitBacklog()
		batch = takeQueued(db.enqueue, append(batch[:0], req), db.maxBatch)
		batch = w.gather(db.enqueue, batch, db.maxBatch)
		db.commitBatch(batch)
		w.committed(len(batch))
		clear(batch) // Let answered requests be collected.
	}
}

// takeQueued adds to batch what queue holds, up to max requests in all,
// without waiting.
func takeQueued(queue <-chan *enqueueRequest, batch []*enqueueRequest, max int) []*enqueueRequest {
	for len(batch) < max {
		select {
		case r, ok := <-queue:
			if !ok {
				return batch
			}
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// Bounds of the committer's wait for the rest of a wave (see wave).
const (
	// defaultLinger is the longest a batch waits for the rest of its wave.
	defaultLinger = 500 * time.Microsecond
	// defaultWaveGap is how soon after a large batch the next one must
	// start to count as the next wave of the same senders.
	defaultWaveGap = 2 * time.Millisecond
	// minWave is the smallest batch whose successor waits for its wave:
	// below it, the commit saved is worth less than the wait costs the
	// senders (a fan-out's few deliveries per commit).
	minWave = 8
)

// wave is the committer's wait for the rest of a wave of requests.
//
// Senders that wait for each answer before sending again (a provider's
// workers, a closed-loop load) come back together: a sync answers a whole
// batch at once, and their next requests arrive over the following fraction
// of a millisecond. The committer, idle by then, would commit the first of
// them alone, and the rest would queue behind that commit and its sync. A
// commit of one delivery costs about as much as a commit of several (the
// pages every commit rewrites, the WAL write, the fsync), so the load would
// take twice the commits, and the CPU, it needs. So when a batch starts
// within gap of the end of one of at least minWave deliveries and at least
// twice its size, the committer waits up to linger for it to grow to half
// that size, holding the writer meanwhile (other writers wait at most linger
// more).
type wave struct {
	linger, gap time.Duration
	// last is the size of the last batch, ended when it was committed.
	last  int
	ended time.Time
	timer *time.Timer
}

func newWave(linger, gap time.Duration) *wave {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &wave{linger: cmp.Or(linger, defaultLinger), gap: cmp.Or(gap, defaultWaveGap), timer: t}
}

// gather adds to batch what arrives on queue until the batch is half the
// size of the last one (and at most max), linger has passed, or the queue
// is closed; it returns batch as it is unless the last batch ended within
// gap and had at least minWave deliveries and twice batch's.
func (w *wave) gather(queue <-chan *enqueueRequest, batch []*enqueueRequest, max int) []*enqueueRequest {
	want := min(w.last/2, max)
	if w.last < minWave || len(batch) >= want || time.Since(w.ended) > w.gap {
		return batch
	}
	deadline := time.Now().Add(w.linger)
	for len(batch) < want {
		wait := time.Until(deadline)
		if wait <= 0 {
			return batch
		}
		w.timer.Reset(wait)
		select {
		case r, ok := <-queue:
			w.timer.Stop()
			if !ok {
				return batch
			}
			batch = append(batch, r)
		case <-w.timer.C:
		}
	}
	return batch
}

// committed records a batch of size n as the last one, ended now.
func (w *wave) committed(n int) { w.last, w.ended = n, time.Now() }

// commitBatch commits the requests of one batch and answers them once the
// commit is durable: it syncs itself when no request waits for the writer,
// and otherwise leaves the sync to the syncer's goroutine. The caller holds
// the writer, which commitBatch releases; the requests are taken only
// then, so a request whose caller gave up while the writer was busy is left
// out, never written behind its caller's back. If the batch's inserts fail,
// each request is tried on its own, so one bad delivery cannot fail the
// others.
//
// The Updates queued at that moment (processed deliveries, mostly) commit
// in the same transaction: one fsync then serves both the webhooks being
// answered and the deliveries being completed, instead of the two taking
// turns at the disk.
func (db *DB) commitBatch(batch []*enqueueRequest) {
	defer func() {
		db.unlockWriter()
		if len(db.enqueue) == 0 {
			// Nothing waits for the writer: sync now rather than hand
			// the sync to the syncer's goroutine, which on a busy
			// machine may wait for a core before it can start it.
			db.sync.flush()
		} else {
			db.sync.nudge()
		}
	}()
	var live []*enqueueRequest // the batch's slice is the committer's
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			if r.state.Abandon() {
				r.done <- enqueueResult{err: fmt.Errorf("sqlite: enqueue: %w", err)}
			}
			continue
		}
		if r.state.Take() {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}
	began := time.Now()
	results, err := db.insertDeliveries(live, true)
	if err != nil && len(live) > 1 {
		db.log.Warn("inbox batch commit failed; committing deliveries one by one", "batch", len(live), "err", err)
		if db.onBatch != nil {
			db.sync.whenDurable(func(error) { db.onBatch(len(live), time.Since(began)) })
		}
		for _, r := range live {
			res, err := db.insertDeliveries([]*enqueueRequest{r}, false)
			db.sync.whenDurable(func(syncErr error) {
				if err = cmp.Or(err, syncErr); err != nil {
					r.done <- enqueueResult{err: err}
					return
				}
				r.done <- res[0]
			})
		}
		return
	}
	db.sync.whenDurable(func(syncErr error) {
		if db.onBatch != nil {
			db.onBatch(len(live), time.Since(began))
		}
		for i, r := range live {
			if err := cmp.Or(err, syncErr); err != nil {
				r.done <- enqueueResult{err: err}
				continue
			}
			r.done <- results[i]
		}
	})
}

// insertDeliveries writes reqs in one transaction, with the queued Updates
// when withUpdates is set (and group commit is on). The caller holds the
// writer lock. A request whose key is already stored within the dedupe
// window, by an earlier transaction or earlier in this one, gets the stored
// id and dup set. An error is the inserts' own: Updates get theirs, and
// commit if they can without the inserts.
func (db *DB) insertDeliveries(reqs []*enqueueRequest, withUpdates bool) ([]enqueueResult, error) {
	// The batch belongs to several callers, so no single caller's context
	// may abort it.
	ctx := context.Background()
	results := make([]enqueueResult, len(reqs))
	var updates []*updateRequest
	if withUpdates && db.maxBatch > 1 {
		updates = db.takeUpdates()
	}
	var t *tx
	var insertErr error
	applied := 0 // t.records[:applied] are the applies' changes
	var err error
	for {
		t = db.newTx()
		var af *applyFailure
		err = db.commitTx(ctx, t, func(q *connQuerier) error {
			if len(updates) == 0 {
				// Alone in the transaction, the inserts need no
				// savepoint: a failed apply rolls the whole
				// transaction back, and the loop runs it again.
				insertErr = db.insertRows(ctx, q, t, reqs, results)
				applied = len(t.records)
				return insertErr
			}
			// With Updates sharing the transaction, failed inserts roll
			// back alone: the Updates still commit, and the caller
			// retries the deliveries one by one. A failed apply rolls
			// the inserts back too, and they run again with that
			// delivery left PENDING.
			for {
				if _, err := q.ExecContext(ctx, "SAVEPOINT inbox"); err != nil {
					return err
				}
				insertErr = db.insertRows(ctx, q, t, reqs, results)
				af = nil
				if insertErr != nil {
					if _, err := q.ExecContext(ctx, "ROLLBACK TO inbox"); err != nil {
						return err
					}
					t.rolledBack(0)
					if errors.As(insertErr, &af) {
						db.noteApplyFailure(af)
					}
				}
				if _, err := q.ExecContext(ctx, "RELEASE inbox"); err != nil {
					return err
				}
				if af == nil {
					break
				}
			}
			applied = len(t.records)
			ran, err := t.runUpdates(ctx, q, updates, false)
			if err == nil && ran == 0 && insertErr != nil {
				err = errNothingToCommit
			}
			return err
		})
		if len(updates) == 0 && errors.As(insertErr, &af) {
			db.noteApplyFailure(af)
			continue // rolled back: run the batch again without that apply
		}
		break
	}
	commitErr, inserted := err, insertErr == nil
	db.sync.whenDurable(func(syncErr error) {
		if commitErr == nil && inserted && applied > 0 && syncErr == nil {
			// The applies' changes precede the Updates' in cursor order.
			db.hooksMu.RLock()
			hooks := db.hooks
			db.hooksMu.RUnlock()
			for _, h := range hooks {
				h(t.records[:applied:applied])
			}
		}
		db.finishUpdates(t, updates, cmp.Or(commitErr, syncErr))
	})
	if err == nil {
		err = insertErr
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: enqueue: %w", err)
	}
	return results, nil
}

// applyFailure is an apply that failed in insertRows: the batch runs
// again with req stored PENDING.
type applyFailure struct {
	req *enqueueRequest
	err error
}

func (f *applyFailure) Error() string { return "apply: " + f.err.Error() }

// noteApplyFailure leaves the failed apply's delivery PENDING in the next
// run of its batch.
func (db *DB) noteApplyFailure(af *applyFailure) {
	af.req.applyErr = af.err
	db.log.Warn("delivery could not be applied at intake; it is left for the processor",
		"provider", af.req.d.Provider, "err", af.err)
}

// insertRows inserts reqs' deliveries in tx, filling results, and runs the
// applies of those that may be applied now through t. A delivery whose
// provider and key were received within the dedupe window of it (before or
// after) is a duplicate of the newest such delivery. A failing apply stops
// the inserts with an *applyFailure.
//
// The statements are set-based: one lookup per chunk of the batch answers,
// for each delivery, the questions asked of the deliveries stored before
// the batch, the deliveries earlier in the batch answer them from memory,
// and the new rows go in with one INSERT per chunk. (An apply writes no
// delivery, so what the lookup found still holds when it runs.) The
// INSERT is OR FAIL: a failing row leaves the rows before it in place
// instead of undoing the statement, which spares SQLite a statement
// journal (a temporary file the pages a multi-row INSERT touches were
// copied to); a failed insert rolls back the whole transaction, or the
// savepoint the inserts run in, all the same.
func (db *DB) insertRows(ctx context.Context, q *connQuerier, t *tx, reqs []*enqueueRequest, results []enqueueResult) error {
	window := db.dedupeWindow.Nanoseconds()
	stored, err := db.lookupStored(ctx, q, t.recent, reqs)
	if err != nil {
		return err
	}
	// The applies below find the events the lookup saw missing without
	// asking SQLite again (tx.GetEvent); the set holds only while they run.
	for i, l := range stored {
		if l.askedEvent && !l.eventStored {
			if t.absent == nil {
				t.absent = make(map[string]bool)
			}
			t.absent[reqs[i].d.ApplyEventID] = true
		}
	}
	defer func() { t.absent = nil }()
	// rows are the deliveries to insert, in batch order; earlier[k] lists
	// the rows of key k, and pendingKeys the ordering keys of the rows
	// stored PENDING.
	rows := make([]deliveryRow, 0, len(reqs))
	var earlier map[dedupKey][]int
	var pendingKeys map[string]bool
	// dupOf[i] is the row whose id request i gets as a duplicate, or -1.
	dupOf := make([]int, len(reqs))
	for i, r := range reqs {
		d := &r.d
		results[i], dupOf[i] = enqueueResult{}, -1
		recv := rowcodec.Nanos(d.ReceiveTime)
		lo, hi := satSub(recv, window), satAdd(recv, window)
		// The newest delivery of the key within the window, by receive
		// time and then id: a row of this batch has a higher id than any
		// stored one.
		k := dedupKey{d.Provider, d.DedupKey}
		row := -1
		for _, j := range earlier[k] {
			if rj := rows[j].recv; rj > lo && rj < hi && (row < 0 || rj >= rows[row].recv) {
				row = j
			}
		}
		if s := stored[i]; s.dup.Valid {
			if row < 0 {
				results[i].id, results[i].dup = s.dup.Int64, true
				continue
			}
			storedRecv, err := storedReceiveNs(ctx, q, s.dup.Int64)
			if err != nil {
				return err
			}
			if storedRecv > rows[row].recv {
				results[i].id, results[i].dup = s.dup.Int64, true
				continue
			}
		}
		if row >= 0 {
			results[i].dup, dupOf[i] = true, row
			continue
		}
		nr := deliveryRow{req: i, recv: recv, state: statePending, nextNs: sql.NullInt64{Int64: recv, Valid: true}}
		waiting := stored[i].waiting || pendingKeys[d.OrderingKey]
		switch {
		case r.applyErr != nil:
			nr.note = "apply at intake: " + r.applyErr.Error()
		case r.apply != nil && d.OrderingKey != "" && waiting:
			// An earlier delivery of its key waits: so does this one.
		case r.apply != nil:
			st, n, err := db.applyNow(ctx, q, t, r)
			if err != nil {
				return err
			}
			if st != statePending {
				nr.state, nr.note = st, n
				nr.processNs, nr.nextNs = sql.NullInt64{Int64: t.commit.UnixNano(), Valid: true}, sql.NullInt64{}
			}
		}
		if nr.state == statePending && d.OrderingKey != "" {
			if pendingKeys == nil {
				pendingKeys = map[string]bool{}
			}
			pendingKeys[d.OrderingKey] = true
		}
		if earlier == nil {
			earlier = map[dedupKey][]int{}
		}
		earlier[k] = append(earlier[k], len(rows))
		rows = append(rows, nr)
	}
	if err := db.insertDeliveryRows(ctx, q, reqs, rows); err != nil {
		return err
	}
	for _, nr := range rows {
		results[nr.req].id, results[nr.req].state = nr.id, nr.state
	}
	for i, row := range dupOf {
		if row >= 0 {
			results[i].id = rows[row].id
		}
	}
	return nil
}

// dedupKey is what makes two deliveries the same delivery.
type dedupKey struct{ provider, key string }

// deliveryRow is a delivery of the batch to insert: reqs[req], stored in
// state with note, as delivery id once inserted.
type deliveryRow struct {
	req               int
	recv              int64
	state             int32
	note              string
	processNs, nextNs sql.NullInt64
	id                int64
}

// storedLookup is what the store held before a batch says of one of its
// deliveries: the newest duplicate within the window, if any, whether a
// PENDING delivery of its ordering key waits (asked only of a delivery to
// apply), and whether the event it will apply is stored (asked only of a
// delivery to apply whose event the writer's cache does not hold).
type storedLookup struct {
	dup         sql.NullInt64
	waiting     bool
	askedEvent  bool
	eventStored bool
}

// chunkSizes are the sizes of the set-based statements of a batch, largest
// first, the powers of two: a batch of n runs n/64 plus at most six
// statements of each kind (one per bit of n mod 64), so the small batches
// of a moderate load run one or two, and the writer keeps seven prepared
// forms of each.
var chunkSizes = [...]int{64, 32, 16, 8, 4, 2, 1}

// chunks calls fn on consecutive spans of n items, each of a size in
// chunkSizes (c indexes it).
func chunks(n int, fn func(c, from, to int) error) error {
	for from, c := 0, 0; from < n; {
		if n-from < chunkSizes[c] {
			c++
			continue
		}
		if err := fn(c, from, from+chunkSizes[c]); err != nil {
			return err
		}
		from += chunkSizes[c]
	}
	return nil
}

// lookupQueries and insertQueries hold the set-based statements for each
// chunk size. One statement answers the questions asked of every
// delivery: is it a duplicate, and (for one to apply) does an earlier
// delivery of its ordering key wait. lookupQueries[withEvents] also asks
// whether the event each delivery applies is stored (a NULL id asks
// nothing); a chunk that asks of no event runs the other form, one
// argument shorter per delivery. The literal state = 1 lets SQLite use the
// partial index of PENDING deliveries.
var lookupQueries, insertQueries = func() (lookup [2][len(chunkSizes)]string, insert [len(chunkSizes)]string) {
	for c, n := range chunkSizes {
		for _, withEvents := range []int{0, 1} {
			cols, event := "?, ?, ?, ?, ?, ?, ?", ""
			if withEvents == 1 {
				cols, event = cols+", ?", `,
			EXISTS (SELECT 1 FROM events WHERE id = k.column8)`
			}
			lookup[withEvents][c] = `SELECT k.column1,
			(SELECT id FROM deliveries
				WHERE provider = k.column2 AND dedup_key = k.column3 AND receive_ns > k.column4 AND receive_ns < k.column5
				ORDER BY receive_ns DESC, id DESC LIMIT 1),
			EXISTS (SELECT 1 FROM deliveries WHERE state = 1 AND ordering_key = k.column6 AND k.column7)` + event + `
			FROM (VALUES ` + strings.Repeat("("+cols+"), ", n-1) + "(" + cols + `)) AS k`
		}
		insert[c] = `INSERT OR FAIL INTO deliveries
			(provider, dedup_key, message_id, event_type, ordering_key, body, state, last_error, receive_ns, process_ns, next_attempt_ns)
			VALUES ` + strings.Repeat("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?), ", n-1) + `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	}
	return lookup, insert
}()

// lookupStored asks what the store held before the batch about each of
// reqs. recent is the writer's cache of committed events: an event it
// holds is known to be stored, and is not asked about.
func (db *DB) lookupStored(ctx context.Context, q *connQuerier, recent *recentEvents, reqs []*enqueueRequest) ([]storedLookup, error) {
	window := db.dedupeWindow.Nanoseconds()
	out := make([]storedLookup, len(reqs))
	args := make([]any, 0, 8*chunkSizes[0])
	err := chunks(len(reqs), func(c, from, to int) error {
		withEvents := 0
		for i := from; i < to; i++ {
			r := reqs[i]
			if id := r.d.ApplyEventID; r.apply != nil && r.applyErr == nil && id != "" && !recent.has(id) {
				out[i].askedEvent, withEvents = true, 1
			}
		}
		args = args[:0]
		for i := from; i < to; i++ {
			r := reqs[i]
			recv := rowcodec.Nanos(r.d.ReceiveTime)
			args = append(args, i, r.d.Provider, r.d.DedupKey, satSub(recv, window), satAdd(recv, window),
				r.d.OrderingKey, r.apply != nil && r.applyErr == nil && r.d.OrderingKey != "")
			if withEvents == 1 {
				var eventID any
				if out[i].askedEvent {
					eventID = r.d.ApplyEventID
				}
				args = append(args, eventID)
			}
		}
		rows, err := q.QueryContext(ctx, lookupQueries[withEvents][c], args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		var i int
		var l storedLookup
		dest := []any{&i, &l.dup, &l.waiting, &l.eventStored}[:3+withEvents]
		for rows.Next() {
			l = storedLookup{}
			if err := rows.Scan(dest...); err != nil {
				return err
			}
			if i < from || i >= to {
				return fmt.Errorf("sqlite: lookup of deliveries answered for row %d of %d..%d", i, from, to)
			}
			l.askedEvent = out[i].askedEvent
			out[i] = l
		}
		return rows.Err()
	})
	return out, err
}

// storedReceiveNs reads when a stored delivery was received.
func storedReceiveNs(ctx context.Context, q *connQuerier, id int64) (int64, error) {
	var recv int64
	err := q.QueryRowContext(ctx, `SELECT receive_ns FROM deliveries WHERE id = ?`, id).Scan(&recv)
	return recv, err
}

// insertDeliveryRows inserts rows and sets their ids. Delivery ids are
// AUTOINCREMENT rowids and the writer is the only connection that writes,
// so the rows of one INSERT get consecutive ids, in order, ending with the
// last inserted rowid.
func (db *DB) insertDeliveryRows(ctx context.Context, q *connQuerier, reqs []*enqueueRequest, rows []deliveryRow) error {
	args := make([]any, 0, 11*chunkSizes[0])
	return chunks(len(rows), func(c, from, to int) error {
		args = args[:0]
		for _, nr := range rows[from:to] {
			d := &reqs[nr.req].d
			body := d.Body
			if body == nil {
				body = []byte{}
			}
			args = append(args, d.Provider, d.DedupKey, d.MessageID, d.EventType, d.OrderingKey,
				body, nr.state, store.TruncateNote(nr.note), nr.recv, nr.processNs, nr.nextNs)
		}
		res, err := q.ExecContext(ctx, insertQueries[c], args...)
		if err != nil {
			return err
		}
		last, err := res.LastInsertId()
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != int64(to-from) {
			return fmt.Errorf("sqlite: inserted %d deliveries of %d", n, to-from)
		}
		for k := range rows[from:to] {
			rows[from+k].id = last - int64(to-from-1-k)
		}
		return nil
	})
}

// applyNow runs r's apply through t and returns the state to store its
// delivery in. An apply's own failure is an *applyFailure.
func (db *DB) applyNow(ctx context.Context, q *connQuerier, t *tx, r *enqueueRequest) (int32, string, error) {
	t.conn, t.applying = q, true
	state, note, err := r.apply(ctx, t)
	t.conn, t.applying = nil, false
	if err == nil {
		switch state {
		case calsyncv1.DeliveryState_DELIVERY_STATE_DONE,
			calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED,
			calsyncv1.DeliveryState_DELIVERY_STATE_DEAD:
			return int32(state), note, nil
		}
		err = fmt.Errorf("sqlite: apply returned state %v: %w", state, store.ErrInvalidArgument)
	}
	return 0, "", &applyFailure{req: r, err: err}
}

// satAdd and satSub add and subtract nanoseconds without wrapping around.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func satSub(a, b int64) int64 {
	if a < math.MinInt64+b {
		return math.MinInt64
	}
	return a - b
}

// deliveryColumns are the columns scanDelivery reads; body is replaced by
// NULL where bodies are not wanted.
const (
	deliveryColumns = `id, provider, dedup_key, message_id, event_type, ordering_key, body,
		state, attempts, last_error, receive_ns, process_ns, next_attempt_ns`
	deliveryColumnsNoBody = `id, provider, dedup_key, message_id, event_type, ordering_key, NULL,
		state, attempts, last_error, receive_ns, process_ns, next_attempt_ns`
)

type scanner interface{ Scan(dest ...any) error }

func scanDelivery(s scanner) (store.Delivery, error) {
	var d store.Delivery
	var state int32
	var recv int64
	var proc, next sql.NullInt64
	err := s.Scan(&d.ID, &d.Provider, &d.DedupKey, &d.MessageID, &d.EventType, &d.OrderingKey, &d.Body,
		&state, &d.Attempts, &d.LastError, &recv, &proc, &next)
	if err != nil {
		return store.Delivery{}, err
	}
	d.State = calsyncv1.DeliveryState(state)
	d.ReceiveTime = time.Unix(0, recv).UTC()
	d.ProcessTime = fromNanos(proc)
	d.NextAttemptTime = fromNanos(next)
	return d, nil
}

// queryDeliveries runs a query selecting delivery columns.
func queryDeliveries(ctx context.Context, q querier, query string, args ...any) ([]store.Delivery, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Delivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// pendingDeliveriesQuery reads PENDING deliveries (the first argument)
// after an id, in id order, from the index of unfinished deliveries.
var pendingDeliveriesQuery = `SELECT ` + deliveryColumns + ` FROM deliveries
	WHERE ` + notDone + ` AND state = ? AND id > ? ORDER BY id LIMIT ?`

// PendingDeliveries returns up to limit PENDING deliveries after afterID in
// id order, bodies included. limit must be positive.
func (db *DB) PendingDeliveries(ctx context.Context, afterID int64, limit int) ([]store.Delivery, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("sqlite: pending deliveries: limit must be positive: %w", store.ErrInvalidArgument)
	}
	var out []store.Delivery
	err := db.readOne(ctx, func(q querier) error {
		var err error
		out, err = queryDeliveries(ctx, q, pendingDeliveriesQuery, statePending, afterID, limit)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: pending deliveries: %w", err)
	}
	return out, nil
}

// GetDelivery returns a delivery, body included, or an error wrapping
// [store.ErrNotFound].
func (db *DB) GetDelivery(ctx context.Context, id int64) (store.Delivery, error) {
	var d store.Delivery
	err := db.readOne(ctx, func(q querier) error {
		var err error
		d, err = getDelivery(ctx, q, id)
		return err
	})
	return d, err
}

func getDelivery(ctx context.Context, q querier, id int64) (store.Delivery, error) {
	d, err := scanDelivery(q.QueryRowContext(ctx, `SELECT `+deliveryColumns+` FROM deliveries WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Delivery{}, fmt.Errorf("sqlite: delivery %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Delivery{}, fmt.Errorf("sqlite: get delivery %d: %w", id, err)
	}
	return d, nil
}

// listDeliveriesQuery is ListDeliveries' statement for q. A state other
// than DONE is read from the index of unfinished deliveries; DONE ones,
// most of the inbox, from the table newest first (or the provider's index).
func listDeliveriesQuery(q store.DeliveryQuery) (string, []any) {
	var w where
	switch {
	case q.State == calsyncv1.DeliveryState_DELIVERY_STATE_UNSPECIFIED:
	case int32(q.State) == stateDone:
		// The unary + keeps SQLite off deliveries_by_state_receive, whose
		// rows it would then sort by id: all of them, for every page.
		w.add("+state = ?", stateDone)
	default:
		w.add(notDone)
		w.add("state = ?", int32(q.State))
	}
	if q.Provider != "" {
		w.add("provider = ?", q.Provider)
	}
	if q.BeforeID > 0 {
		w.add("id < ?", q.BeforeID)
	}
	return `SELECT ` + deliveryColumnsNoBody + ` FROM deliveries` + w.String() +
		` ORDER BY id DESC` + limit(q.Limit), w.args
}

// ListDeliveries returns the deliveries matching q, newest first, without
// bodies.
func (db *DB) ListDeliveries(ctx context.Context, q store.DeliveryQuery) ([]store.Delivery, error) {
	if q.Limit < 0 {
		return nil, fmt.Errorf("sqlite: negative limit: %w", store.ErrInvalidArgument)
	}
	query, args := listDeliveriesQuery(q)
	var out []store.Delivery
	err := db.read(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = queryDeliveries(ctx, txQuerier{tx}, query, args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: list deliveries: %w", err)
	}
	return out, nil
}

// RecordAttempt records a failed attempt on a PENDING delivery. It returns
// an error wrapping [store.ErrNotFound] if there is no such delivery, and
// one wrapping [store.ErrFailedPrecondition] if it is not PENDING (its
// outcome was already recorded).
func (db *DB) RecordAttempt(ctx context.Context, id int64, lastErr string, next time.Time) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	return db.write(ctx, func(q *connQuerier) error {
		res, err := q.ExecContext(ctx, `UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_attempt_ns = ?
			WHERE id = ? AND state = ?`, store.TruncateNote(lastErr), nullNanos(next), id, statePending)
		if err != nil {
			return fmt.Errorf("sqlite: record attempt on delivery %d: %w", id, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		d, err := getDelivery(ctx, q, id)
		if err != nil {
			return err
		}
		return fmt.Errorf("sqlite: record attempt on delivery %d in state %v: %w", id, d.State, store.ErrFailedPrecondition)
	})
}

// RetryDelivery puts a DEAD delivery back to PENDING, due now, with its
// attempts reset so it gets the full series of retries again; its last
// error is kept. It returns the delivery as it now is.
func (db *DB) RetryDelivery(ctx context.Context, id int64) (store.Delivery, error) {
	if err := db.enter(); err != nil {
		return store.Delivery{}, err
	}
	defer db.leave()
	var d store.Delivery
	err := db.write(ctx, func(q *connQuerier) error {
		var err error
		if d, err = getDelivery(ctx, q, id); err != nil {
			return err
		}
		if d.State != calsyncv1.DeliveryState_DELIVERY_STATE_DEAD {
			return fmt.Errorf("sqlite: retry delivery %d in state %v: %w", id, d.State, store.ErrFailedPrecondition)
		}
		if _, err := q.ExecContext(ctx, `UPDATE deliveries SET state = ?, attempts = 0, process_ns = NULL, next_attempt_ns = ?
			WHERE id = ?`, statePending, rowcodec.Nanos(db.now()), id); err != nil {
			return fmt.Errorf("sqlite: retry delivery %d: %w", id, err)
		}
		d, err = getDelivery(ctx, q, id)
		return err
	})
	return d, err
}

// deadCountQuery counts the deliveries of one state other than DONE (its
// argument) in the index of unfinished deliveries.
var deadCountQuery = `SELECT COUNT(*) FROM deliveries WHERE ` + notDone + ` AND state = ?`

// InboxStats counts pending and dead deliveries and finds the oldest
// pending one, all at one instant.
func (db *DB) InboxStats(ctx context.Context) (store.InboxStats, error) {
	var s store.InboxStats
	err := db.read(ctx, func(tx *sql.Tx) error {
		var oldest sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*), MIN(receive_ns) FROM deliveries WHERE state = ?`,
			statePending).Scan(&s.Pending, &oldest); err != nil {
			return err
		}
		s.OldestPending = fromNanos(oldest)
		return tx.QueryRowContext(ctx, deadCountQuery, stateDead).Scan(&s.Dead)
	})
	if err != nil {
		return store.InboxStats{}, fmt.Errorf("sqlite: inbox stats: %w", err)
	}
	return s, nil
}

// pruneChunk is the most deliveries one pruning transaction removes, so
// that webhooks never wait long for the writer (bodies can be a megabyte
// each).
const pruneChunk = 256

// PruneDeliveries removes finished deliveries received and finished before
// the given time, in transactions of at most pruneChunk deliveries, taking
// the writer afresh for each so webhooks interleave. It returns how many
// of each state it removed, also when it fails part way.
func (db *DB) PruneDeliveries(ctx context.Context, before time.Time) (store.PrunedDeliveries, error) {
	var total store.PrunedDeliveries
	if err := db.enter(); err != nil {
		return total, err
	}
	defer db.leave()
	beforeNs := rowcodec.Nanos(before)
	for {
		var chunk store.PrunedDeliveries
		err := db.write(ctx, func(q *connQuerier) error {
			chunk = store.PrunedDeliveries{}
			rows, err := q.QueryContext(ctx, `DELETE FROM deliveries WHERE id IN (
				SELECT id FROM deliveries WHERE state IN (?, ?, ?) AND receive_ns < ? AND process_ns < ?
				LIMIT ?) RETURNING state`,
				stateDone, stateIgnored, stateDead, beforeNs, beforeNs, pruneChunk)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var state int32
				if err := rows.Scan(&state); err != nil {
					return err
				}
				switch state {
				case stateDone:
					chunk.Done++
				case stateIgnored:
					chunk.Ignored++
				case stateDead:
					chunk.Dead++
				}
			}
			return rows.Err()
		})
		if err != nil {
			return total, fmt.Errorf("sqlite: prune deliveries: %w", err)
		}
		total.Done += chunk.Done
		total.Ignored += chunk.Ignored
		total.Dead += chunk.Dead
		if chunk.Total() < pruneChunk {
			return total, nil
		}
	}
}
