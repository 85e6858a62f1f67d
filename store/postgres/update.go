package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/handoff"
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
			if req.state.Abandon() {
				return fmt.Errorf("postgres: update: %w", ctx.Err())
			}
			// A transaction took it: its outcome is the answer.
			return <-req.done
		}
	}
}

// updateRequest is one Update waiting for a transaction to run in.
type updateRequest struct {
	ctx  context.Context
	fn   func(tx store.Tx) error
	done chan error
	err  error
	// from and to delimit the request's changes in the transaction's.
	from, to int
	state    handoff.State
}

// runUpdates runs the Updates queued now in one transaction and answers
// them. The caller holds the writer turn.
func (db *DB) runUpdates() {
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
	if len(batch) == 0 {
		return
	}
	ctx := context.Background()
	t := &tx{commit: time.Unix(0, rowcodec.Nanos(db.now())).UTC(), now: db.now}
	err := db.withIntakeConn(ctx, func(conn *pgxpool.Conn) error {
		if _, err := conn.Exec(ctx, `BEGIN`); err != nil {
			return fmt.Errorf("postgres: begin: %w", err)
		}
		ran, err := t.run(ctx, conn, batch)
		if err != nil {
			return err
		}
		if ran == 0 {
			return errNothingToCommit
		}
		if len(t.records) > 0 {
			db.feed.committing(t.records[0].Cursor)
		}
		// A lone Update's writes go with the COMMIT, in one round trip.
		commit := &pgx.Batch{}
		commit.Queue(`COMMIT`)
		t.tx = conn
		err = t.flush(ctx, commit)
		t.tx = nil
		if err != nil {
			if len(t.records) > 0 {
				db.feed.abandoned()
			}
			return fmt.Errorf("postgres: commit: %w", err)
		}
		return nil
	})
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
func (t *tx) run(ctx context.Context, pgTx txConn, batch []*updateRequest) (ran int, err error) {
	for _, r := range batch {
		if r.err = r.ctx.Err(); r.err != nil {
			r.err = fmt.Errorf("postgres: update: %w", r.err)
			continue
		}
		r.from = len(t.records)
		if len(batch) == 1 {
			// Its writes are sent with the COMMIT (see runUpdates).
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
		appending, head, sentHead := t.appending, t.head, t.sentHead
		t.tx = pgTx
		r.err = r.fn(t)
		if r.err == nil {
			// The writes and the savepoint's release share a round trip.
			r.err = t.flush(ctx, releaseSavepoint())
		}
		t.tx = nil
		r.to = len(t.records)
		if r.err == nil {
			ran++
			continue
		}
		// The savepoint's rollback also undoes its cursors and the head it
		// wrote; the append lock may go with it, so take it again on the
		// next append.
		t.buf.reset()
		t.records = t.records[:r.from]
		r.to = r.from
		t.appending, t.head, t.sentHead = appending, head, sentHead
		if _, err := pgTx.Exec(ctx, "ROLLBACK TO u"); err != nil {
			return 0, err
		}
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
	tx txConn
	// commit is the transaction's commit time, read from now.
	commit  time.Time
	now     func() time.Time
	records []store.ChangeRecord
	// appending is set once the transaction holds the append lock; head
	// is then the last cursor it handed out, and sentHead the head it last
	// wrote to change_log_head.
	appending      bool
	head, sentHead int64
	// buf holds the writes not sent yet (see writeBuffer).
	buf writeBuffer
}

var _ store.Tx = (*tx)(nil)

// txConn is where a tx sends its statements: a pgx.Tx, or a connection
// whose transaction the caller began and ends itself (see insertOnce).
type txConn interface {
	querier
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

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
	if c, ok := t.buf.calendars[id]; ok {
		return rowcodec.DecodeCalendar(c.data)
	}
	return getCalendar(ctx, t.tx, id)
}

func (t *tx) GetEvent(ctx context.Context, id string, withRaw bool) (*calsyncv1.CalendarEvent, error) {
	if err := t.live(); err != nil {
		return nil, err
	}
	return t.getEvent(ctx, id, withRaw)
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
	t.buf.putCalendar(c.GetId(), bufferedCalendar{provider: c.GetProvider(), providerCalendarID: c.GetProviderCalendarId(), data: data})
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
	t.buf.putEvent(r)
	return nil
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
	t.buf.putEvent(r)
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
		if err := t.lockAppend(ctx); err != nil {
			return 0, err
		}
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
	t.head++
	cursor := t.head
	t.records = append(t.records, store.ChangeRecord{
		Cursor:     store.Cursor(cursor),
		Type:       c.GetType(),
		CalendarID: calendarID,
		Provider:   provider,
		CommitTime: t.commit,
		Change:     data,
	})
	t.buf.changes = append(t.buf.changes, t.records[len(t.records)-1])
	return store.Cursor(cursor), nil
}

// lockAppend takes the change log's append lock and reads the head under
// it, in one round trip: the second statement's snapshot is taken once
// the first has the lock, so it sees every commit of the lock's previous
// holders. The transaction then hands out cursors after the head itself,
// and writes the new head with its changes (see flush).
func (t *tx) lockAppend(ctx context.Context) error {
	b := &pgx.Batch{}
	b.Queue(`SELECT pg_advisory_xact_lock($1, $2)`, lockClass, lockAppendLog)
	b.Queue(`SELECT head FROM change_log_head`)
	br := t.tx.SendBatch(ctx, b)
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&t.head)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("postgres: take the change log's append lock: %w", err)
	}
	t.appending, t.sentHead = true, t.head
	return nil
}

func (t *tx) GetSyncState(ctx context.Context, calendarID string) (store.SyncState, error) {
	if err := t.live(); err != nil {
		return store.SyncState{}, err
	}
	if s, ok := t.buf.syncStates[calendarID]; ok {
		return s, nil
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
	t.buf.putSyncState(s)
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
	t.buf.finishes = append(t.buf.finishes, bufferedFinish{id: id, processNs: t.commit.UnixNano(), state: int32(state), note: note})
	return nil
}
