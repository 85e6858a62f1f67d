package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/rowcodec"
)

// querier is what reads need: a read transaction, the read pool (see
// readOne) or the write transaction of an Update.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (rowSet, error)
	QueryRowContext(ctx context.Context, query string, args ...any) rowScanner
}

// GetCalendar returns a calendar or an error wrapping [store.ErrNotFound].
func (db *DB) GetCalendar(ctx context.Context, id string) (*calsyncv1.Calendar, error) {
	var c *calsyncv1.Calendar
	err := db.readOne(ctx, func(q querier) error {
		var err error
		c, err = getCalendar(ctx, q, id)
		return err
	})
	return c, err
}

func getCalendar(ctx context.Context, q querier, id string) (*calsyncv1.Calendar, error) {
	var data []byte
	err := q.QueryRowContext(ctx, `SELECT data FROM calendars WHERE id = ?`, id).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: calendar %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get calendar %q: %w", id, err)
	}
	return rowcodec.DecodeCalendar(data)
}

// ListCalendars returns the calendars matching q in id order.
func (db *DB) ListCalendars(ctx context.Context, q store.CalendarQuery) ([]*calsyncv1.Calendar, error) {
	if q.Limit < 0 {
		return nil, fmt.Errorf("sqlite: negative limit: %w", store.ErrInvalidArgument)
	}
	var w where
	if q.Provider != "" {
		w.add("provider = ?", q.Provider)
	}
	if q.ProviderCalendarID != "" {
		w.add("provider_calendar_id = ?", q.ProviderCalendarID)
	}
	if q.AfterID != "" {
		w.add("id > ?", q.AfterID)
	}
	query := `SELECT data FROM calendars` + w.String() + ` ORDER BY id` + limit(q.Limit)
	var out []*calsyncv1.Calendar
	err := db.read(ctx, func(tx *sql.Tx) error {
		out = nil
		rows, err := tx.QueryContext(ctx, query, w.args...)
		if err != nil {
			return fmt.Errorf("sqlite: list calendars: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var data []byte
			if err := rows.Scan(&data); err != nil {
				return fmt.Errorf("sqlite: list calendars: %w", err)
			}
			c, err := rowcodec.DecodeCalendar(data)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: list calendars: %w", err)
		}
		return nil
	})
	return out, err
}

// GetEvent returns an event, tombstones included, or an error wrapping
// [store.ErrNotFound]. The raw payload is read only when withRaw is set.
func (db *DB) GetEvent(ctx context.Context, id string, withRaw bool) (*calsyncv1.CalendarEvent, error) {
	var e *calsyncv1.CalendarEvent
	err := db.readOne(ctx, func(q querier) error {
		var err error
		e, err = getEvent(ctx, q, id, withRaw)
		return err
	})
	return e, err
}

func getEvent(ctx context.Context, q querier, id string, withRaw bool) (*calsyncv1.CalendarEvent, error) {
	query := `SELECT data FROM events WHERE id = ?`
	if withRaw {
		query = `SELECT data, raw FROM events WHERE id = ?`
	}
	// The columns are decoded straight from what the driver read
	// (sql.RawBytes, which only Rows allow), not from a further copy.
	rows, err := q.QueryContext(ctx, query, id)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get event %q: %w", id, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("sqlite: get event %q: %w", id, err)
		}
		return nil, eventNotFound(id)
	}
	var data, raw sql.RawBytes
	if withRaw {
		err = rows.Scan(&data, &raw)
	} else {
		err = rows.Scan(&data)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get event %q: %w", id, err)
	}
	// The driver's buffers are its own copies of the row, valid until the
	// next Next or Close: decoding copies what it keeps.
	return rowcodec.DecodeEvent(data, raw)
}

// eventNotFound is the error of an event id the store does not hold. The
// writer meets one for every new event it applies and only tests it with
// errors.Is, so its message is formatted when asked for, not before.
type eventNotFound string

func (e eventNotFound) Error() string {
	return fmt.Sprintf("sqlite: event %q: %v", string(e), store.ErrNotFound)
}

func (e eventNotFound) Unwrap() error { return store.ErrNotFound }

// ListEvents returns the events matching q ordered by (start_time, id).
func (db *DB) ListEvents(ctx context.Context, q store.EventQuery) ([]*calsyncv1.CalendarEvent, error) {
	if q.Limit < 0 {
		return nil, fmt.Errorf("sqlite: negative limit: %w", store.ErrInvalidArgument)
	}
	var w where
	if q.CalendarID != "" && q.CalendarID != "-" {
		w.add("calendar_id = ?", q.CalendarID)
	}
	if !q.Start.IsZero() {
		s := rowcodec.TimeInstant(q.Start)
		w.add("(end_sec, end_nsec) > (?, ?)", s.Sec, s.Nsec)
	}
	if !q.End.IsZero() {
		e := rowcodec.TimeInstant(q.End)
		w.add("(start_sec, start_nsec) < (?, ?)", e.Sec, e.Nsec)
	}
	if !q.UpdatedSince.IsZero() {
		w.add("update_ns >= ?", rowcodec.Nanos(q.UpdatedSince))
	}
	if !q.IncludeDeleted {
		w.add("deleted = 0")
	}
	if q.After != nil {
		a := rowcodec.TimeInstant(q.After.StartTime)
		w.add("(start_sec, start_nsec, id) > (?, ?, ?)", a.Sec, a.Nsec, q.After.ID)
	}
	cols := "data, NULL"
	if q.IncludeRaw {
		cols = "data, raw"
	}
	query := `SELECT ` + cols + ` FROM events` + w.String() + ` ORDER BY start_sec, start_nsec, id` + limit(q.Limit)
	var out []*calsyncv1.CalendarEvent
	err := db.read(ctx, func(tx *sql.Tx) error {
		out = nil
		return scanEvents(ctx, txQuerier{tx}, query, w.args, func(e *calsyncv1.CalendarEvent) error {
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

// scanEvents runs query, which selects (data, raw), and hands each event to fn.
func scanEvents(ctx context.Context, q querier, query string, args []any, fn func(*calsyncv1.CalendarEvent) error) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("sqlite: list events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var data, raw []byte
		if err := rows.Scan(&data, &raw); err != nil {
			return fmt.Errorf("sqlite: list events: %w", err)
		}
		e, err := rowcodec.DecodeEvent(data, raw)
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: list events: %w", err)
	}
	return nil
}

// GetSyncState returns a calendar's sync state or an error wrapping
// [store.ErrNotFound].
func (db *DB) GetSyncState(ctx context.Context, calendarID string) (store.SyncState, error) {
	var s store.SyncState
	err := db.readOne(ctx, func(q querier) error {
		var err error
		s, err = getSyncState(ctx, q, calendarID)
		return err
	})
	return s, err
}

func getSyncState(ctx context.Context, q querier, calendarID string) (store.SyncState, error) {
	var wm, full sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT watermark_ns, last_full_sync_ns FROM sync_state WHERE calendar_id = ?`,
		calendarID).Scan(&wm, &full)
	if errors.Is(err, sql.ErrNoRows) {
		return store.SyncState{}, fmt.Errorf("sqlite: sync state of %q: %w", calendarID, store.ErrNotFound)
	}
	if err != nil {
		return store.SyncState{}, fmt.Errorf("sqlite: get sync state of %q: %w", calendarID, err)
	}
	return store.SyncState{CalendarID: calendarID, Watermark: fromNanos(wm), LastFullSync: fromNanos(full)}, nil
}

// changeHead returns the newest cursor ever committed. sqlite_sequence
// remembers it even when the rows are gone.
func changeHead(ctx context.Context, q querier) (store.Cursor, error) {
	var head int64
	err := q.QueryRowContext(ctx, `SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)`).Scan(&head)
	if err != nil {
		return 0, fmt.Errorf("sqlite: read change log head: %w", err)
	}
	return store.Cursor(head), nil
}

// compactedCursor returns the newest cursor compaction removed.
func compactedCursor(ctx context.Context, q querier) (store.Cursor, error) {
	var c int64
	if err := q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, metaCompacted).Scan(&c); err != nil {
		return 0, fmt.Errorf("sqlite: read compaction point: %w", err)
	}
	return store.Cursor(c), nil
}

// ChangeBounds returns the compaction point and the head, read together.
func (db *DB) ChangeBounds(ctx context.Context) (store.ChangeBounds, error) {
	var b store.ChangeBounds
	err := db.read(ctx, func(tx *sql.Tx) error {
		var err error
		if b.Compacted, err = compactedCursor(ctx, txQuerier{tx}); err != nil {
			return err
		}
		b.Head, err = changeHead(ctx, txQuerier{tx})
		return err
	})
	return b, err
}

// maxChangesPrealloc caps the room ReadChanges reserves for its result, so a
// huge limit on a short log costs nothing.
const maxChangesPrealloc = 4096

// readChangesQuery reads a page of the change log. It reads each row's
// cursor and change only: the change's encoding holds what the other
// columns say (rowcodec.ReadChangeHead), and every column read costs the
// driver calls, each under the connection's mutex, and a copy.
const readChangesQuery = `SELECT cursor, data FROM changes WHERE cursor > ? ORDER BY cursor LIMIT ?`

// changeColumnsQuery reads the columns ReadChangeHead stands in for, for
// a change whose encoding does not hold them.
const changeColumnsQuery = `SELECT type, calendar_id, provider, commit_ns FROM changes WHERE cursor = ?`

// ReadChanges returns up to limit changes after the cursor after, in cursor
// order. The compaction point and the changes are read in one transaction,
// so a compaction running meanwhile cannot open a silent gap. limit must be
// positive.
func (db *DB) ReadChanges(ctx context.Context, after store.Cursor, limit int) ([]store.ChangeRecord, error) {
	return db.collectChanges(ctx, after, limit, 0)
}

// ReadChangePage is ReadChanges that stops once the changes read reach
// maxBytes (see [store.ChangeLog]).
func (db *DB) ReadChangePage(ctx context.Context, after store.Cursor, limit, maxBytes int) ([]store.ChangeRecord, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("sqlite: read changes: maxBytes must be positive: %w", store.ErrInvalidArgument)
	}
	return db.collectChanges(ctx, after, limit, maxBytes)
}

// VisitChangePage hands the records of the page ReadChangePage would return
// to visit (see [store.ChangeLog]). A record's Change is the driver's
// buffer, valid until the next row is read.
func (db *DB) VisitChangePage(ctx context.Context, after store.Cursor, limit, maxBytes int, visit func(*store.ChangeRecord) error) error {
	if maxBytes <= 0 {
		return fmt.Errorf("sqlite: read changes: maxBytes must be positive: %w", store.ErrInvalidArgument)
	}
	return db.readChanges(ctx, after, limit, maxBytes, visit)
}

// collectChanges returns the records of a page, their changes copied out
// of the driver's buffers into shared chunks.
func (db *DB) collectChanges(ctx context.Context, after store.Cursor, limit, maxBytes int) ([]store.ChangeRecord, error) {
	var out []store.ChangeRecord
	var arena changeArena
	err := db.readChanges(ctx, after, limit, maxBytes, func(r *store.ChangeRecord) error {
		if out == nil {
			// Catch-up reads ask for full pages: growing the slice row
			// by row would copy every record several times.
			out = make([]store.ChangeRecord, 0, min(limit, maxChangesPrealloc))
		}
		rec := *r
		rec.Change = arena.keep(r.Change)
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readChanges reads a page of the change log, maxBytes 0 being no bound,
// and calls visit with each record, its Change the driver's buffer.
func (db *DB) readChanges(ctx context.Context, after store.Cursor, limit, maxBytes int, visit func(*store.ChangeRecord) error) error {
	if limit <= 0 {
		return fmt.Errorf("sqlite: read changes: limit must be positive: %w", store.ErrInvalidArgument)
	}
	// A watcher catching up runs these queries once per page: they are
	// prepared after their first use, outside the read transaction (a
	// pool of one connection would wait for it) but before Close can
	// close the cache.
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	defer db.readStmts.prepareWanted(ctx, db.r)
	return db.read(ctx, func(tx *sql.Tx) error {
		// Both queries go through statements kept prepared.
		q := cachedTxQuerier{tx: tx, cache: db.readStmts}
		compacted, err := compactedCursor(ctx, q)
		if err != nil {
			return err
		}
		if after < compacted {
			return fmt.Errorf("sqlite: cursor %d is older than the change log (compacted up to %d): %w",
				after, compacted, store.ErrCompacted)
		}
		rows, err := q.QueryContext(ctx, readChangesQuery, int64(after), limit)
		if err != nil {
			return fmt.Errorf("sqlite: read changes: %w", err)
		}
		defer rows.Close()
		size := 0
		// The cursor is scanned into an interface and the change into
		// RawBytes: database/sql converts other destinations through
		// reflection, and would copy each change once more.
		var cursor any
		var change sql.RawBytes
		var r store.ChangeRecord
		// A page's changes name a few calendars and providers many times:
		// each name is made a string once.
		names := map[string]string{}
		name := func(b []byte) string {
			if s, ok := names[string(b)]; ok {
				return s
			}
			s := string(b)
			names[s] = s
			return s
		}
		for rows.Next() {
			if err := rows.Scan(&cursor, &change); err != nil {
				return fmt.Errorf("sqlite: read changes: %w", err)
			}
			c, ok := cursor.(int64)
			if !ok {
				return fmt.Errorf("sqlite: read changes: cursor %v read as %T", cursor, cursor)
			}
			r.Cursor, r.Change = store.Cursor(c), []byte(change)
			if h, ok := rowcodec.ReadChangeHead(change); ok {
				r.Type, r.CalendarID, r.Provider, r.CommitTime = h.Type, name(h.CalendarID), name(h.Provider), h.CommitTime
			} else if err := readChangeColumns(ctx, q, &r); err != nil {
				return err
			}
			if err := visit(&r); err != nil {
				return err
			}
			if size += len(change); maxBytes > 0 && size >= maxBytes {
				break
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: read changes: %w", err)
		}
		return nil
	})
}

// readChangeColumns sets r's type, calendar, provider and commit time from
// its row's columns.
func readChangeColumns(ctx context.Context, q querier, r *store.ChangeRecord) error {
	var typ, commitNs int64
	if err := q.QueryRowContext(ctx, changeColumnsQuery, int64(r.Cursor)).Scan(&typ, &r.CalendarID, &r.Provider, &commitNs); err != nil {
		return fmt.Errorf("sqlite: read change %d: %w", r.Cursor, err)
	}
	r.Type, r.CommitTime = calsyncv1.ChangeType(typ), time.Unix(0, commitNs).UTC()
	return nil
}

// where builds a WHERE clause from conditions joined by AND.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

// in adds "col IN (...)" unless values is empty.
func (w *where) in(col string, values []string) {
	if len(values) == 0 {
		return
	}
	w.conds = append(w.conds, col+" IN ("+strings.TrimSuffix(strings.Repeat("?, ", len(values)), ", ")+")")
	for _, v := range values {
		w.args = append(w.args, v)
	}
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// limit is the LIMIT clause for n; 0 means none.
func limit(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(" LIMIT %d", n)
}

// changeArena copies the changes of a page into shared chunks: one
// allocation for many changes instead of one each.
type changeArena struct{ chunk []byte }

// changeArenaChunk is the least size of a chunk; a larger change gets a
// chunk of its own size.
const changeArenaChunk = 64 << 10

// keep returns a copy of b that stays valid after the driver reuses b. The
// copy's capacity ends with it, so appending to one change never writes
// into the next.
func (a *changeArena) keep(b []byte) []byte {
	if b == nil {
		return nil
	}
	if cap(a.chunk)-len(a.chunk) < len(b) {
		a.chunk = make([]byte, 0, max(changeArenaChunk, len(b)))
	}
	start := len(a.chunk)
	a.chunk = append(a.chunk, b...)
	return a.chunk[start:len(a.chunk):len(a.chunk)]
}
