package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/rowcodec"
)

var errTxDone = errors.New("postgres: transaction used after Update returned")

// Update runs fn in one write transaction, in this instance's writer turn.
// After a successful commit, still in the turn, it hands the appended
// changes to the change feed, which passes them to the [DB.OnCommit] hooks
// shortly after, in cursor order among every instance's commits. If fn or
// the commit fails, nothing fn wrote is kept and no hook sees it.
//
// Concurrent Updates share one transaction, each in its own savepoint, so
// that many deliveries processed at once cost one commit instead of one
// each (up to Options.MaxBatch). Whoever takes the writer turn runs every
// Update queued at that moment; the others wait for its commit. A failing
// fn rolls back to its savepoint and leaves the others alone.
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
			// The queue is full; only a writer empties it.
			db.runUpdates()
			db.unlockWriter()
		case <-ctx.Done():
			return fmt.Errorf("postgres: update: %w", ctx.Err())
		}
	}
	for {
		select {
		case err := <-req.done:
			return err
		case db.wlock <- struct{}{}:
			db.runUpdates()
			db.unlockWriter()
		case <-ctx.Done():
			if req.state.CompareAndSwap(updateQueued, updateAbandoned) {
				return fmt.Errorf("postgres: update: %w", ctx.Err())
			}
			// A transaction took it: its outcome is the answer.
			return <-req.done
		}
	}
}

// States of an updateRequest: queued, then taken by a transaction or
// abandoned by its caller, never both.
const (
	updateQueued int32 = iota
	updateTaken
	updateAbandoned
)

// updateRequest is one Update waiting for a transaction to run in.
type updateRequest struct {
	ctx  context.Context
	fn   func(tx store.Tx) error
	done chan error
	err  error
	// from and to delimit the request's changes in the transaction's.
	from, to int
	state    atomic.Int32
}

// runUpdates runs the Updates queued now in one transaction and answers
// them. The caller holds the writer turn.
func (db *DB) runUpdates() {
	var batch []*updateRequest
	for len(batch) < db.maxBatch {
		select {
		case r := <-db.updates:
			if r.state.CompareAndSwap(updateQueued, updateTaken) {
				batch = append(batch, r)
			}
			continue
		default:
		}
		break
	}
	if len(batch) == 0 {
		return
	}
	ctx := context.Background()
	t := &tx{commit: time.Unix(0, rowcodec.Nanos(db.now())).UTC(), now: db.now}
	err := func() error {
		pgTx, err := db.pool.Begin(ctx)
		if err != nil {
			return fmt.Errorf("postgres: begin: %w", err)
		}
		defer pgTx.Rollback(ctx)
		ran, err := t.run(ctx, pgTx, batch)
		if err != nil {
			return err
		}
		if ran == 0 {
			return errNothingToCommit
		}
		if len(t.records) > 0 {
			db.feed.committing(t.records[0].Cursor)
		}
		if err := pgTx.Commit(ctx); err != nil {
			if len(t.records) > 0 {
				db.feed.abandoned()
			}
			return fmt.Errorf("postgres: commit: %w", err)
		}
		return nil
	}()
	if err != nil {
		for _, r := range batch {
			if r.err == nil {
				r.err = err
			}
			r.done <- classify(r.err)
		}
		return
	}
	// Hooks see each Update's changes as one commit, in cursor order.
	var groups [][]store.ChangeRecord
	for _, r := range batch {
		if r.err == nil && r.to > r.from {
			groups = append(groups, t.records[r.from:r.to:r.to])
		}
	}
	db.feed.committed(groups)
	for _, r := range batch {
		r.done <- classify(r.err)
	}
}

// errNothingToCommit rolls back a shared transaction in which every Update
// failed; each still gets its own error.
var errNothingToCommit = errors.New("postgres: nothing to commit")

// run runs batch's Updates in pgTx and reports how many succeeded. A lone
// Update runs without a savepoint; in a batch each has its own, so a
// failing one leaves the others. An error means the whole transaction must
// roll back.
func (t *tx) run(ctx context.Context, pgTx pgx.Tx, batch []*updateRequest) (ran int, err error) {
	for _, r := range batch {
		if r.err = r.ctx.Err(); r.err != nil {
			r.err = fmt.Errorf("postgres: update: %w", r.err)
			continue
		}
		r.from = len(t.records)
		if len(batch) == 1 {
			t.tx = pgTx
			r.err = r.fn(t)
			t.tx = nil
			r.to = len(t.records)
			if r.err != nil {
				return 0, r.err
			}
			return 1, nil
		}
		if _, err := pgTx.Exec(ctx, "SAVEPOINT u"); err != nil {
			return 0, err
		}
		appending := t.appending
		t.tx = pgTx
		r.err = r.fn(t)
		t.tx = nil
		if r.err != nil {
			// The savepoint's rollback also undoes its cursors; the append
			// lock may go with it, so take it again on the next append.
			t.records = t.records[:r.from]
			t.appending = appending
			if _, err := pgTx.Exec(ctx, "ROLLBACK TO u"); err != nil {
				return 0, err
			}
		} else {
			ran++
		}
		r.to = len(t.records)
		if _, err := pgTx.Exec(ctx, "RELEASE u"); err != nil {
			return 0, err
		}
	}
	return ran, nil
}

// OnCommit registers fn to receive the changes of every commit on the
// database that appended some, by any instance of any process, this one
// included: each change once, in cursor order, with no gap, from the
// store's change feed goroutine, shortly after the commit (see Commit hooks
// in the package documentation). Calls are made one at a time; fn must not
// block or call back into the store. A call carries one commit's changes
// as far as the feed can tell commits apart: those of this instance are
// split per Update or applied delivery; those read from the change log per
// commit time (a page boundary may split one).
func (db *DB) OnCommit(fn func([]store.ChangeRecord)) {
	db.hooksMu.Lock()
	defer db.hooksMu.Unlock()
	db.hooks = append(db.hooks[:len(db.hooks):len(db.hooks)], fn)
}

// tx implements [store.Tx] on one PostgreSQL transaction.
type tx struct {
	tx pgx.Tx
	// commit is the transaction's commit time, read from now.
	commit  time.Time
	now     func() time.Time
	records []store.ChangeRecord
	// appending is set once the transaction holds the append lock.
	appending bool
}

var _ store.Tx = (*tx)(nil)

func (t *tx) live() error {
	if t.tx == nil {
		return errTxDone
	}
	return nil
}

func (t *tx) GetCalendar(ctx context.Context, id string) (*calsyncv1.Calendar, error) {
	if err := t.live(); err != nil {
		return nil, err
	}
	return getCalendar(ctx, t.tx, id)
}

func (t *tx) GetEvent(ctx context.Context, id string, withRaw bool) (*calsyncv1.CalendarEvent, error) {
	if err := t.live(); err != nil {
		return nil, err
	}
	return getEvent(ctx, t.tx, id, withRaw)
}

func (t *tx) PutCalendar(ctx context.Context, c *calsyncv1.Calendar) error {
	if err := t.live(); err != nil {
		return err
	}
	if c.GetId() == "" || c.GetProvider() == "" {
		return fmt.Errorf("postgres: calendar needs id and provider: %w", store.ErrInvalidArgument)
	}
	if err := model.CheckEncodable(c); err != nil {
		return fmt.Errorf("postgres: calendar %s: %w: %w", c.GetId(), err, store.ErrInvalidArgument)
	}
	data, err := rowcodec.Marshal(c)
	if err != nil {
		return fmt.Errorf("postgres: marshal calendar %s: %w", c.GetId(), err)
	}
	_, err = t.tx.Exec(ctx, `INSERT INTO calendars (id, provider, provider_calendar_id, data) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET provider = excluded.provider,
			provider_calendar_id = excluded.provider_calendar_id, data = excluded.data`,
		c.GetId(), c.GetProvider(), c.GetProviderCalendarId(), data)
	if err != nil {
		return fmt.Errorf("postgres: put calendar %s: %w", c.GetId(), err)
	}
	return nil
}

func (t *tx) PutEvent(ctx context.Context, e *calsyncv1.CalendarEvent) error {
	if err := t.live(); err != nil {
		return err
	}
	r, err := rowcodec.EncodeEvent(e)
	if err != nil {
		return err
	}
	_, err = t.tx.Exec(ctx, `INSERT INTO events (id, calendar_id, provider, start_sec, start_nsec, end_sec, end_nsec,
			update_ns, deleted, data, raw)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (id) DO UPDATE SET calendar_id = excluded.calendar_id, provider = excluded.provider,
			start_sec = excluded.start_sec, start_nsec = excluded.start_nsec,
			end_sec = excluded.end_sec, end_nsec = excluded.end_nsec, update_ns = excluded.update_ns,
			deleted = excluded.deleted, data = excluded.data, raw = excluded.raw`,
		r.ID, r.CalendarID, r.Provider, r.Start.Sec, r.Start.Nsec, r.End.Sec, r.End.Nsec, r.UpdateNs, r.Deleted, r.Data, r.Raw)
	if err != nil {
		return fmt.Errorf("postgres: put event %s: %w", r.ID, err)
	}
	return nil
}

// AppendChange appends c to the change log. The first append of a
// transaction takes the change log's append lock, held until the
// transaction ends, and every append takes the next cursor under it (see
// the package documentation).
func (t *tx) AppendChange(ctx context.Context, c *calsyncv1.Change) (store.Cursor, error) {
	if err := t.live(); err != nil {
		return 0, err
	}
	if c.GetType() == calsyncv1.ChangeType_CHANGE_TYPE_UNSPECIFIED {
		return 0, fmt.Errorf("postgres: change without a type: %w", store.ErrInvalidArgument)
	}
	what, calendarID, provider := "event", c.GetEvent().GetCalendarId(), c.GetEvent().GetProvider()
	if c.GetType() == calsyncv1.ChangeType_CHANGE_TYPE_CALENDAR_UPDATED {
		what, calendarID, provider = "calendar", c.GetCalendar().GetId(), c.GetCalendar().GetProvider()
	}
	if calendarID == "" || provider == "" {
		return 0, fmt.Errorf("postgres: %v change needs its %s, with calendar id and provider: %w",
			c.GetType(), what, store.ErrInvalidArgument)
	}
	if !t.appending {
		if _, err := t.tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, lockAppendLog); err != nil {
			return 0, fmt.Errorf("postgres: take the change log's append lock: %w", err)
		}
		t.appending = true
		if len(t.records) == 0 {
			// Read the commit time under the lock, so that commit times
			// follow cursor order across writers as far as their clocks
			// agree.
			if now := time.Unix(0, rowcodec.Nanos(t.now())).UTC(); now.After(t.commit) {
				t.commit = now
			}
		}
	}
	data, err := rowcodec.EncodeChange(c, t.commit)
	if err != nil {
		return 0, fmt.Errorf("postgres: encode change: %w", err)
	}
	var cursor int64
	err = t.tx.QueryRow(ctx, `WITH next AS (UPDATE change_log_head SET head = head + 1 RETURNING head)
		INSERT INTO changes (cursor, type, calendar_id, provider, commit_ns, data)
		SELECT head, $1, $2, $3, $4, $5 FROM next RETURNING cursor`,
		int32(c.GetType()), calendarID, provider, t.commit.UnixNano(), data).Scan(&cursor)
	if err != nil {
		return 0, fmt.Errorf("postgres: append change: %w", err)
	}
	t.records = append(t.records, store.ChangeRecord{
		Cursor:     store.Cursor(cursor),
		Type:       c.GetType(),
		CalendarID: calendarID,
		Provider:   provider,
		CommitTime: t.commit,
		Change:     data,
	})
	return store.Cursor(cursor), nil
}

func (t *tx) GetSyncState(ctx context.Context, calendarID string) (store.SyncState, error) {
	if err := t.live(); err != nil {
		return store.SyncState{}, err
	}
	return getSyncState(ctx, t.tx, calendarID)
}

func (t *tx) PutSyncState(ctx context.Context, s store.SyncState) error {
	if err := t.live(); err != nil {
		return err
	}
	if s.CalendarID == "" {
		return fmt.Errorf("postgres: sync state needs a calendar id: %w", store.ErrInvalidArgument)
	}
	_, err := t.tx.Exec(ctx, `INSERT INTO sync_state (calendar_id, watermark_ns, last_full_sync_ns) VALUES ($1, $2, $3)
		ON CONFLICT (calendar_id) DO UPDATE SET watermark_ns = excluded.watermark_ns,
			last_full_sync_ns = excluded.last_full_sync_ns`,
		s.CalendarID, nullNanos(s.Watermark), nullNanos(s.LastFullSync))
	if err != nil {
		return fmt.Errorf("postgres: put sync state of %s: %w", s.CalendarID, err)
	}
	return nil
}

// FinishDelivery records the outcome of processing a delivery; a non-empty
// note replaces its last error.
func (t *tx) FinishDelivery(ctx context.Context, id int64, state calsyncv1.DeliveryState, note string) error {
	if err := t.live(); err != nil {
		return err
	}
	switch state {
	case calsyncv1.DeliveryState_DELIVERY_STATE_DONE,
		calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED,
		calsyncv1.DeliveryState_DELIVERY_STATE_DEAD:
	default:
		return fmt.Errorf("postgres: finish delivery %d as %v: %w", id, state, store.ErrInvalidArgument)
	}
	note = store.TruncateNote(note)
	tag, err := t.tx.Exec(ctx, `UPDATE deliveries SET state = $1, process_ns = $2, next_attempt_ns = NULL,
		last_error = CASE WHEN $3 = '' THEN last_error ELSE $4 END WHERE id = $5`,
		int32(state), t.commit.UnixNano(), note, []byte(note), id)
	if err != nil {
		return fmt.Errorf("postgres: finish delivery %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: delivery %d: %w", id, store.ErrNotFound)
	}
	return nil
}
