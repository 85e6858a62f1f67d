package sqlite

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/handoff"
	"github.com/calsync/calsync/store/internal/rowcodec"
)

// errTxDone reports a Tx used after its Update returned.
var errTxDone = errors.New("sqlite: transaction used after Update returned")

// Update runs fn in one write transaction. Once the commit is durable, and
// in commit order so that hooks see commits in cursor order, it hands the
// appended changes to every [DB.OnCommit] hook, and then returns. If fn fails or
// the commit does, everything fn wrote is rolled back and no hook sees it.
//
// Concurrent Updates share one SQLite transaction, each in its own
// savepoint, so that many deliveries processed at once cost one fsync
// instead of one each (up to Options.MaxBatch; 1 turns this off). Whoever
// becomes the leader runs every Update queued at that moment; the others
// wait for its commit. A failing fn rolls back to its savepoint and leaves
// the others alone.
func (db *DB) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	req := &updateRequest{ctx: ctx, fn: fn, done: make(chan error, 1)}
	for queued := false; !queued; {
		select {
		case db.updates <- req:
			queued = true
		case db.wlock <- struct{}{}:
			// The queue is full. Only a writer empties it (abandoned
			// requests included), so become the writer and make room.
			db.runUpdates()
			db.unlockWriter()
			db.sync.flush()
		case <-ctx.Done():
			return fmt.Errorf("sqlite: update: %w", ctx.Err())
		}
	}
	for {
		select {
		case err := <-req.done:
			return err
		case db.updateLeader <- struct{}{}:
			// One waiting Update at a time competes for the writer, so
			// the inbox's group commit takes turns with whole batches of
			// Updates instead of queueing behind each of their callers.
			select {
			case db.wlock <- struct{}{}:
				db.runUpdates()
				db.unlockWriter()
				<-db.updateLeader
				// This caller waits for the sync anyway: it runs it.
				db.sync.flush()
			case err := <-req.done:
				// Another writer ran this request meanwhile.
				<-db.updateLeader
				return err
			case <-ctx.Done():
				<-db.updateLeader
				return req.abandon(ctx)
			}
		case <-ctx.Done():
			return req.abandon(ctx)
		}
	}
}

// abandon withdraws a request whose ctx ended, unless a transaction already
// took it: then its outcome is the answer.
func (r *updateRequest) abandon(ctx context.Context) error {
	if r.state.Abandon() {
		return fmt.Errorf("sqlite: update: %w", ctx.Err())
	}
	return <-r.done
}

// updateRequest is one Update waiting for a transaction to run in.
type updateRequest struct {
	ctx  context.Context
	fn   func(tx store.Tx) error
	done chan error
	err  error
	// from and to delimit the request's changes in the transaction's.
	from, to int
	// state moves from queued to taken (by a transaction) or abandoned (by
	// its caller, whose ctx ended first), never both.
	state handoff.State
}

// runUpdates runs the Updates queued now in one transaction. The caller
// holds the writer lock.
func (db *DB) runUpdates() {
	batch := db.takeUpdates()
	if len(batch) == 0 {
		return
	}
	t := db.newTx()
	ctx := context.Background()
	err := db.commitTx(ctx, t, func(q *connQuerier) error {
		ran, err := t.runUpdates(ctx, q, batch, len(batch) == 1)
		if err == nil && ran == 0 {
			err = errNothingToCommit
		}
		return err
	})
	db.sync.whenDurable(func(syncErr error) { db.finishUpdates(t, batch, cmp.Or(err, syncErr)) })
}

// takeUpdates takes the Updates queued now, at most MaxBatch of them.
func (db *DB) takeUpdates() []*updateRequest {
	var batch []*updateRequest
	for len(batch) < db.maxBatch {
		select {
		case r := <-db.updates:
			if r.state.Take() {
				batch = append(batch, r)
			}
			continue
		default:
		}
		break
	}
	return batch
}

// newTx starts the bookkeeping of one write transaction. The caller holds
// the writer lock.
func (db *DB) newTx() *tx {
	// One commit time per transaction, read under the writer lock so commit
	// times follow cursor order as far as the clock allows.
	return &tx{commit: time.Unix(0, rowcodec.Nanos(db.now())).UTC(), recent: db.recent}
}

// runUpdates runs batch's Updates in q's transaction and reports how many succeeded.
// Each runs in its own savepoint, so a failing one leaves the others;
// alone says the transaction holds nothing else, and a single Update then
// runs without one. An error is one the whole transaction must roll back
// for.
func (t *tx) runUpdates(ctx context.Context, q *connQuerier, batch []*updateRequest, alone bool) (ran int, err error) {
	for _, r := range batch {
		if r.err = r.ctx.Err(); r.err != nil {
			continue
		}
		r.from = len(t.records)
		if alone && len(batch) == 1 {
			t.conn = q
			r.err = r.fn(t)
			t.conn = nil
			r.to = len(t.records)
			if r.err != nil {
				return 0, r.err
			}
			return 1, nil
		}
		if _, err := q.ExecContext(ctx, "SAVEPOINT u"); err != nil {
			return 0, err
		}
		mark := len(t.records)
		t.conn = q
		r.err = r.fn(t)
		t.conn = nil
		if r.err != nil {
			t.rolledBack(mark)
			if _, err := q.ExecContext(ctx, "ROLLBACK TO u"); err != nil {
				return 0, err
			}
		} else {
			ran++
		}
		r.to = len(t.records)
		if _, err := q.ExecContext(ctx, "RELEASE u"); err != nil {
			return 0, err
		}
	}
	return ran, nil
}

// finishUpdates answers batch's Updates once their transaction has ended
// with err and is durable, after handing the committed changes to the
// hooks. It runs on the syncer, which runs commits' completions in commit
// order, so hooks see commits in cursor order.
func (db *DB) finishUpdates(t *tx, batch []*updateRequest, err error) {
	if err != nil {
		for _, r := range batch {
			if r.err == nil {
				r.err = err
			}
			r.done <- r.err
		}
		return
	}
	db.hooksMu.RLock()
	hooks := db.hooks
	db.hooksMu.RUnlock()
	// Hooks see each Update's changes as one commit, in cursor order.
	for _, r := range batch {
		if r.err == nil && r.to > r.from {
			for _, h := range hooks {
				h(t.records[r.from:r.to:r.to])
			}
		}
	}
	for _, r := range batch {
		r.done <- r.err
	}
}

// errNothingToCommit rolls back a shared transaction in which every Update
// failed; each still gets its own error.
var errNothingToCommit = errors.New("sqlite: nothing to commit")

// OnCommit registers fn to receive the changes of every commit that
// appended some, in commit order, once the commit is durable, on the
// goroutine that syncs commits (see durable.go): fn must not block.
func (db *DB) OnCommit(fn func([]store.ChangeRecord)) {
	db.hooksMu.Lock()
	defer db.hooksMu.Unlock()
	// Copy on write: Update iterates a slice it read under the lock.
	db.hooks = append(db.hooks[:len(db.hooks):len(db.hooks)], fn)
}

// tx implements [store.Tx] on the writer's transaction.
type tx struct {
	// conn runs statements in the transaction while a caller's function
	// (an Update's, an apply's) runs; nil outside it.
	conn    *connQuerier
	commit  time.Time
	records []store.ChangeRecord
	// applying is set while an apply at intake runs (see
	// [DB.EnqueueApply]): its batch decided from the deliveries as they
	// were, so it may not change one.
	applying bool
	// read is the last event GetEvent found, as PutEvent's hint that
	// the event is stored with these indexed columns (see PutEvent).
	read storedEvent
	// recent is the writer's cache of committed event rows; staged holds
	// the rows this transaction wrote, for recent once it commits
	// (commitTx) and gone when any of its writes is rolled back
	// (rolledBack).
	recent *recentEvents
	staged map[string][]byte
	// absent holds, while a batch's applies run (insertRows), the events
	// its lookup found missing before the batch; an event written since
	// leaves it. GetEvent answers those without a query. It is gone before
	// anything in the transaction can be rolled back.
	absent map[string]bool
	// encoded maps the events this transaction wrote (PutEvent) or read
	// from rows it or this process wrote (GetEvent) to those rows, which
	// AppendChange then carries as they are instead of encoding the
	// events again (see store.Tx). Only rows PutEvent encoded are here,
	// so every one has been checked.
	encoded map[*calsyncv1.CalendarEvent][]byte
}

// remember records that e is encoded as data (see tx.encoded).
func (t *tx) remember(e *calsyncv1.CalendarEvent, data []byte) {
	if t.encoded == nil {
		t.encoded = make(map[*calsyncv1.CalendarEvent][]byte)
	}
	t.encoded[e] = data
}

// commitTx runs fn in a write transaction for t (see writeTx) and, once
// its COMMIT has succeeded, hands the rows t wrote to the writer's cache.
func (db *DB) commitTx(ctx context.Context, t *tx, fn func(*connQuerier) error) error {
	err := db.writeTx(ctx, func(q *connQuerier) error {
		if err := fn(q); err != nil {
			return err
		}
		return t.writeChanges(ctx, q)
	})
	if err == nil {
		for id, data := range t.staged {
			t.recent.add(id, data)
		}
	}
	t.staged, t.encoded = nil, nil
	return err
}

// rolledBack undoes t's bookkeeping of what a rollback to a savepoint
// took back: the changes appended after mark, and the rows t wrote, some
// of which may no longer be the table's (the cache forgot their events
// when they were written).
func (t *tx) rolledBack(mark int) {
	t.records = t.records[:mark]
	t.staged, t.encoded = nil, nil
}

// storedEvent is an event's id and the columns of its events indexes that
// an update may leave as they are.
type storedEvent struct {
	id, calendarID string
	start          rowcodec.Instant
}

var _ store.Tx = (*tx)(nil)

func (t *tx) live() error {
	if t.conn == nil {
		return errTxDone
	}
	return nil
}

// GetCalendar returns a calendar or an error wrapping [store.ErrNotFound].
func (t *tx) GetCalendar(ctx context.Context, id string) (*calsyncv1.Calendar, error) {
	if err := t.live(); err != nil {
		return nil, err
	}
	return getCalendar(ctx, t.conn, id)
}

// GetEvent returns an event, with its raw payload if withRaw, or an error
// wrapping [store.ErrNotFound].
func (t *tx) GetEvent(ctx context.Context, id string, withRaw bool) (*calsyncv1.CalendarEvent, error) {
	if err := t.live(); err != nil {
		return nil, err
	}
	var e *calsyncv1.CalendarEvent
	var err error
	if data, ok := t.cachedRow(id, withRaw); ok {
		if e, err = rowcodec.DecodeEvent(data, nil); err == nil {
			t.remember(e, data)
		}
	} else if t.absent[id] {
		return nil, eventNotFound(id)
	} else {
		e, err = getEvent(ctx, t.conn, id, withRaw)
	}
	if err == nil {
		t.read = storedEvent{id: id, calendarID: e.GetCalendarId(), start: rowcodec.TsInstant(e.GetStartTime())}
	}
	return e, err
}

// cachedRow is event id's row as this transaction or the last committed
// ones wrote it, when the raw payload is not wanted (it is not kept).
func (t *tx) cachedRow(id string, withRaw bool) ([]byte, bool) {
	if withRaw {
		return nil, false
	}
	if data, ok := t.staged[id]; ok {
		return data, true
	}
	return t.recent.get(id)
}

// PutCalendar inserts or replaces a calendar.
func (t *tx) PutCalendar(ctx context.Context, c *calsyncv1.Calendar) error {
	if err := t.live(); err != nil {
		return err
	}
	if c.GetId() == "" || c.GetProvider() == "" {
		return fmt.Errorf("sqlite: calendar needs id and provider: %w", store.ErrInvalidArgument)
	}
	if err := model.CheckEncodable(c); err != nil {
		return fmt.Errorf("sqlite: calendar %s: %w: %w", c.GetId(), err, store.ErrInvalidArgument)
	}
	data, err := rowcodec.Marshal(c)
	if err != nil {
		return fmt.Errorf("sqlite: marshal calendar %s: %w", c.GetId(), err)
	}
	_, err = t.conn.ExecContext(ctx, `INSERT INTO calendars (id, provider, provider_calendar_id, data) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET provider = excluded.provider,
			provider_calendar_id = excluded.provider_calendar_id, data = excluded.data`,
		c.GetId(), c.GetProvider(), c.GetProviderCalendarId(), data)
	if err != nil {
		return fmt.Errorf("sqlite: put calendar %s: %w", c.GetId(), err)
	}
	return nil
}

// PutEvent inserts or replaces an event, raw payload included.
func (t *tx) PutEvent(ctx context.Context, e *calsyncv1.CalendarEvent) error {
	if err := t.live(); err != nil {
		return err
	}
	r, err := rowcodec.EncodeEvent(e)
	if err != nil {
		return err
	}
	return t.putEvent(ctx, e, r)
}

// PutEventRawJSON is PutEvent with raw as e's raw payload (see store.Tx).
func (t *tx) PutEventRawJSON(ctx context.Context, e *calsyncv1.CalendarEvent, raw model.RawJSON) error {
	if err := t.live(); err != nil {
		return err
	}
	r, err := rowcodec.EncodeEventRawJSON(e, raw)
	if err != nil {
		return err
	}
	return t.putEvent(ctx, e, r)
}

// putEvent writes e, encoded as r.
func (t *tx) putEvent(ctx context.Context, e *calsyncv1.CalendarEvent, r rowcodec.EventRow) error {
	// Whatever happens below, the cache no longer holds this event: the
	// write may fail half way or be rolled back later.
	t.recent.forget(r.ID)
	delete(t.staged, r.ID)
	delete(t.encoded, e)
	delete(t.absent, r.ID)
	if err := t.putEventRow(ctx, r); err != nil {
		return err
	}
	if t.staged == nil {
		t.staged = make(map[string][]byte)
	}
	t.staged[r.ID] = r.Data
	t.remember(e, r.Data)
	return nil
}

// updateEventInPlace rewrites an event that keeps its calendar and start
// (see putEventRow); insertFirstChange inserts a transaction's first change
// (see AppendChange).
const (
	updateEventInPlace = `UPDATE events SET provider = ?, end_sec = ?, end_nsec = ?,
			update_ns = ?, deleted = ?, data = ?, raw = ?
		WHERE id = ? AND calendar_id = ? AND start_sec = ? AND start_nsec = ?`
	insertFirstChange = `INSERT INTO changes (type, calendar_id, provider, commit_ns, data) VALUES (?, ?, ?, ?, ?)`
)

// putEventRow writes an encoded event into the events table.
func (t *tx) putEventRow(ctx context.Context, r rowcodec.EventRow) error {
	if t.read.id == r.ID && t.read.calendarID == r.CalendarID && t.read.start == r.Start {
		// An update that keeps the calendar and the start. SQLite
		// rewrites the entries of every index whose columns an UPDATE
		// sets, equal values or not, so the upsert below would delete
		// and reinsert the event's entries in events_by_calendar and
		// events_by_start: four B-tree writes and two more pages for the
		// commit. The WHERE clause, not the hint, decides: a row that is
		// gone or has moved since it was read is left to the upsert.
		res, err := t.conn.ExecContext(ctx, updateEventInPlace,
			r.Provider, r.End.Sec, r.End.Nsec, r.UpdateNs, r.Deleted, r.Data, r.Raw,
			r.ID, r.CalendarID, r.Start.Sec, r.Start.Nsec)
		if err != nil {
			return fmt.Errorf("sqlite: put event %s: %w", r.ID, err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 1 {
			return nil
		}
	}
	_, err := t.conn.ExecContext(ctx, `INSERT INTO events (id, calendar_id, provider, start_sec, start_nsec, end_sec, end_nsec,
			update_ns, deleted, data, raw)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET calendar_id = excluded.calendar_id, provider = excluded.provider,
			start_sec = excluded.start_sec, start_nsec = excluded.start_nsec,
			end_sec = excluded.end_sec, end_nsec = excluded.end_nsec, update_ns = excluded.update_ns,
			deleted = excluded.deleted, data = excluded.data, raw = excluded.raw`,
		r.ID, r.CalendarID, r.Provider, r.Start.Sec, r.Start.Nsec, r.End.Sec, r.End.Nsec, r.UpdateNs, r.Deleted, r.Data, r.Raw)
	if err != nil {
		return fmt.Errorf("sqlite: put event %s: %w", r.ID, err)
	}
	return nil
}

// AppendChange appends c to the change log and returns its cursor. The raw
// payloads of c's events are left out of the log.
func (t *tx) AppendChange(ctx context.Context, c *calsyncv1.Change) (store.Cursor, error) {
	if err := t.live(); err != nil {
		return 0, err
	}
	if c.GetType() == calsyncv1.ChangeType_CHANGE_TYPE_UNSPECIFIED {
		return 0, fmt.Errorf("sqlite: change without a type: %w", store.ErrInvalidArgument)
	}
	what, calendarID, provider := "event", c.GetEvent().GetCalendarId(), c.GetEvent().GetProvider()
	if c.GetType() == calsyncv1.ChangeType_CHANGE_TYPE_CALENDAR_UPDATED {
		what, calendarID, provider = "calendar", c.GetCalendar().GetId(), c.GetCalendar().GetProvider()
	}
	if calendarID == "" || provider == "" {
		return 0, fmt.Errorf("sqlite: %v change needs its %s, with calendar id and provider: %w",
			c.GetType(), what, store.ErrInvalidArgument)
	}
	var event, previous []byte
	if c.GetEvent() != nil {
		event = t.encoded[c.GetEvent()]
	}
	if c.GetPreviousEvent() != nil {
		previous = t.encoded[c.GetPreviousEvent()]
	}
	data, err := rowcodec.EncodeChangeWith(c, t.commit, event, previous)
	if err != nil {
		return 0, fmt.Errorf("sqlite: encode change: %w", err)
	}
	var cursor store.Cursor
	if len(t.records) == 0 {
		// The transaction's first change is inserted now, and its
		// cursor, the rowid AUTOINCREMENT gives it, numbers the others.
		res, err := t.conn.ExecContext(ctx, insertFirstChange,
			int32(c.GetType()), calendarID, provider, t.commit.UnixNano(), data)
		if err != nil {
			return 0, fmt.Errorf("sqlite: append change: %w", err)
		}
		// Only the writer inserts: the last rowid is this change's.
		first, err := res.LastInsertId()
		if err != nil {
			return 0, fmt.Errorf("sqlite: append change: %w", err)
		}
		cursor = store.Cursor(first)
	} else {
		// The others follow it without a gap (a rollback to a savepoint
		// drops the last ones, or all of them with the first's row), and
		// writeChanges inserts them together just before COMMIT: the
		// cursors are the ones AUTOINCREMENT would give them.
		cursor = t.records[0].Cursor + store.Cursor(len(t.records))
	}
	t.records = append(t.records, store.ChangeRecord{
		Cursor:     cursor,
		Type:       c.GetType(),
		CalendarID: calendarID,
		Provider:   provider,
		CommitTime: t.commit,
		Change:     data,
	})
	return cursor, nil
}

// writeChanges inserts the changes t appended after its first (which
// AppendChange inserted), in cursor order, a chunk of them per statement.
// sqlite_sequence takes the last cursor, as for any row inserted into an
// AUTOINCREMENT table.
func (t *tx) writeChanges(ctx context.Context, q *connQuerier) error {
	if len(t.records) < 2 {
		return nil
	}
	rest := t.records[1:]
	args := make([]any, 0, 6*min(len(rest), chunkSizes[0]))
	err := chunks(len(rest), func(c, from, to int) error {
		args = args[:0]
		for _, r := range rest[from:to] {
			args = append(args, int64(r.Cursor), int32(r.Type), r.CalendarID, r.Provider, r.CommitTime.UnixNano(), r.Change)
		}
		_, err := q.ExecContext(ctx, changeInserts[c], args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: append changes: %w", err)
	}
	return nil
}

// changeInserts are writeChanges' statements, one per chunk size.
var changeInserts = func() (insert [len(chunkSizes)]string) {
	for c, n := range chunkSizes {
		insert[c] = `INSERT INTO changes (cursor, type, calendar_id, provider, commit_ns, data) VALUES ` +
			strings.Repeat("(?, ?, ?, ?, ?, ?), ", n-1) + `(?, ?, ?, ?, ?, ?)`
	}
	return insert
}()

// GetSyncState returns a calendar's sync state or an error wrapping
// [store.ErrNotFound].
func (t *tx) GetSyncState(ctx context.Context, calendarID string) (store.SyncState, error) {
	if err := t.live(); err != nil {
		return store.SyncState{}, err
	}
	return getSyncState(ctx, t.conn, calendarID)
}

// PutSyncState stores a calendar's sync state.
func (t *tx) PutSyncState(ctx context.Context, s store.SyncState) error {
	if err := t.live(); err != nil {
		return err
	}
	if s.CalendarID == "" {
		return fmt.Errorf("sqlite: sync state needs a calendar id: %w", store.ErrInvalidArgument)
	}
	_, err := t.conn.ExecContext(ctx, `INSERT INTO sync_state (calendar_id, watermark_ns, last_full_sync_ns) VALUES (?, ?, ?)
		ON CONFLICT (calendar_id) DO UPDATE SET watermark_ns = excluded.watermark_ns,
			last_full_sync_ns = excluded.last_full_sync_ns`,
		s.CalendarID, nullNanos(s.Watermark), nullNanos(s.LastFullSync))
	if err != nil {
		return fmt.Errorf("sqlite: put sync state of %s: %w", s.CalendarID, err)
	}
	return nil
}

// FinishDelivery records the outcome of processing a delivery. A non-empty
// note, cut by [store.TruncateNote], replaces the delivery's last error, so
// the reason for DEAD (or IGNORED) is kept.
func (t *tx) FinishDelivery(ctx context.Context, id int64, state calsyncv1.DeliveryState, note string) error {
	if err := t.live(); err != nil {
		return err
	}
	if t.applying {
		return fmt.Errorf("sqlite: finish delivery %d while applying a delivery at intake: %w", id, store.ErrFailedPrecondition)
	}
	switch state {
	case calsyncv1.DeliveryState_DELIVERY_STATE_DONE,
		calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED,
		calsyncv1.DeliveryState_DELIVERY_STATE_DEAD:
	default:
		return fmt.Errorf("sqlite: finish delivery %d as %v: %w", id, state, store.ErrInvalidArgument)
	}
	note = store.TruncateNote(note)
	res, err := t.conn.ExecContext(ctx, `UPDATE deliveries SET state = ?, process_ns = ?, next_attempt_ns = NULL,
		last_error = CASE WHEN ? = '' THEN last_error ELSE ? END WHERE id = ?`,
		int32(state), t.commit.UnixNano(), note, note, id)
	if err != nil {
		return fmt.Errorf("sqlite: finish delivery %d: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: finish delivery %d: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("sqlite: delivery %d: %w", id, store.ErrNotFound)
	}
	return nil
}
