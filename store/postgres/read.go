package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/rowcodec"
)

// GetCalendar returns a calendar or an error wrapping [store.ErrNotFound].
func (db *DB) GetCalendar(ctx context.Context, id string) (*calsyncv1.Calendar, error) {
	var c *calsyncv1.Calendar
	err := db.read(ctx, func(tx pgx.Tx) (err error) {
		c, err = getCalendar(ctx, tx, id)
		return err
	})
	return c, err
}

func getCalendar(ctx context.Context, q querier, id string) (*calsyncv1.Calendar, error) {
	var data []byte
	err := q.QueryRow(ctx, `SELECT data FROM calendars WHERE id = $1`, id).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: calendar %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get calendar %q: %w", id, err)
	}
	return rowcodec.DecodeCalendar(data)
}

// ListCalendars returns calendars matching q in id order.
func (db *DB) ListCalendars(ctx context.Context, q store.CalendarQuery) ([]*calsyncv1.Calendar, error) {
	if q.Limit < 0 {
		return nil, fmt.Errorf("postgres: negative limit: %w", store.ErrInvalidArgument)
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
	err := db.read(ctx, func(tx pgx.Tx) error {
		out = nil
		rows, err := tx.Query(ctx, query, w.args...)
		if err != nil {
			return fmt.Errorf("postgres: list calendars: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var data []byte
			if err := rows.Scan(&data); err != nil {
				return fmt.Errorf("postgres: list calendars: %w", err)
			}
			c, err := rowcodec.DecodeCalendar(data)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return rows.Err()
	})
	return out, err
}

// GetEvent returns an event, with its raw payload if withRaw.
func (db *DB) GetEvent(ctx context.Context, id string, withRaw bool) (*calsyncv1.CalendarEvent, error) {
	var e *calsyncv1.CalendarEvent
	err := db.read(ctx, func(tx pgx.Tx) (err error) {
		e, err = getEvent(ctx, tx, id, withRaw)
		return err
	})
	return e, err
}

func getEvent(ctx context.Context, q querier, id string, withRaw bool) (*calsyncv1.CalendarEvent, error) {
	var data, raw []byte
	query := `SELECT data, NULL::bytea FROM events WHERE id = $1`
	if withRaw {
		query = `SELECT data, raw FROM events WHERE id = $1`
	}
	err := q.QueryRow(ctx, query, id).Scan(&data, &raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: event %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get event %q: %w", id, err)
	}
	return rowcodec.DecodeEvent(data, raw)
}

// ListEvents returns events matching q ordered by (start_time, id).
func (db *DB) ListEvents(ctx context.Context, q store.EventQuery) ([]*calsyncv1.CalendarEvent, error) {
	if q.Limit < 0 {
		return nil, fmt.Errorf("postgres: negative limit: %w", store.ErrInvalidArgument)
	}
	var w where
	if q.CalendarID != "" && q.CalendarID != "-" {
		w.add("calendar_id = ?", q.CalendarID)
	}
	if !q.Start.IsZero() {
		s := rowcodec.TimeInstant(q.Start)
		w.add("(end_sec, end_nsec) > (?::bigint, ?::integer)", s.Sec, s.Nsec)
	}
	if !q.End.IsZero() {
		e := rowcodec.TimeInstant(q.End)
		w.add("(start_sec, start_nsec) < (?::bigint, ?::integer)", e.Sec, e.Nsec)
	}
	if !q.UpdatedSince.IsZero() {
		w.add("update_ns >= ?", rowcodec.Nanos(q.UpdatedSince))
	}
	if !q.IncludeDeleted {
		w.add("NOT deleted")
	}
	if q.After != nil {
		a := rowcodec.TimeInstant(q.After.StartTime)
		w.add("(start_sec, start_nsec, id) > (?::bigint, ?::integer, ?::text)", a.Sec, a.Nsec, q.After.ID)
	}
	cols := "data, NULL::bytea"
	if q.IncludeRaw {
		cols = "data, raw"
	}
	query := `SELECT ` + cols + ` FROM events` + w.String() + ` ORDER BY start_sec, start_nsec, id` + limit(q.Limit)
	var out []*calsyncv1.CalendarEvent
	err := db.read(ctx, func(tx pgx.Tx) error {
		out = nil
		rows, err := tx.Query(ctx, query, w.args...)
		if err != nil {
			return fmt.Errorf("postgres: list events: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var data, raw []byte
			if err := rows.Scan(&data, &raw); err != nil {
				return fmt.Errorf("postgres: list events: %w", err)
			}
			e, err := rowcodec.DecodeEvent(data, raw)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	return out, err
}

// GetSyncState returns a calendar's sync state or ErrNotFound.
func (db *DB) GetSyncState(ctx context.Context, calendarID string) (store.SyncState, error) {
	var s store.SyncState
	err := db.read(ctx, func(tx pgx.Tx) (err error) {
		s, err = getSyncState(ctx, tx, calendarID)
		return err
	})
	return s, err
}

func getSyncState(ctx context.Context, q querier, calendarID string) (store.SyncState, error) {
	var wm, full *int64
	err := q.QueryRow(ctx, `SELECT watermark_ns, last_full_sync_ns FROM sync_state WHERE calendar_id = $1`,
		calendarID).Scan(&wm, &full)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.SyncState{}, fmt.Errorf("postgres: sync state of %q: %w", calendarID, store.ErrNotFound)
	}
	if err != nil {
		return store.SyncState{}, fmt.Errorf("postgres: get sync state of %q: %w", calendarID, err)
	}
	return store.SyncState{CalendarID: calendarID, Watermark: fromNanos(wm), LastFullSync: fromNanos(full)}, nil
}

// changeBounds reads the change log's bounds in q's snapshot.
func changeBounds(ctx context.Context, q querier) (store.ChangeBounds, error) {
	var head, compacted int64
	err := q.QueryRow(ctx, `SELECT (SELECT head FROM change_log_head),
		(SELECT value::bigint FROM meta WHERE key = $1)`, metaCompacted).Scan(&head, &compacted)
	if err != nil {
		return store.ChangeBounds{}, fmt.Errorf("postgres: read change log bounds: %w", err)
	}
	return store.ChangeBounds{Head: store.Cursor(head), Compacted: store.Cursor(compacted)}, nil
}

// ChangeBounds returns the current bounds of the change log.
func (db *DB) ChangeBounds(ctx context.Context) (store.ChangeBounds, error) {
	var b store.ChangeBounds
	err := db.read(ctx, func(tx pgx.Tx) (err error) {
		b, err = changeBounds(ctx, tx)
		return err
	})
	return b, err
}

// ReadChanges returns up to limit committed changes after the cursor after,
// in cursor order. Cursors are handed out in commit order (see the package
// documentation), so what it returns has no gap a later commit could fill.
func (db *DB) ReadChanges(ctx context.Context, after store.Cursor, limit int) ([]store.ChangeRecord, error) {
	return db.readChanges(ctx, after, limit, 0)
}

// ReadChangePage is ReadChanges that stops once the changes read reach
// maxBytes (see [store.ChangeLog]).
func (db *DB) ReadChangePage(ctx context.Context, after store.Cursor, limit, maxBytes int) ([]store.ChangeRecord, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("postgres: read changes: maxBytes must be positive: %w", store.ErrInvalidArgument)
	}
	return db.readChanges(ctx, after, limit, maxBytes)
}

// VisitChangePage hands the records of the page ReadChangePage would return
// to visit (see [store.ChangeLog]). The page is read whole first: the
// driver copies each row's bytes anyway, and the compaction bound arrives
// with the rows, so nothing is visited before it is checked.
func (db *DB) VisitChangePage(ctx context.Context, after store.Cursor, limit, maxBytes int, visit func(*store.ChangeRecord) error) error {
	recs, err := db.ReadChangePage(ctx, after, limit, maxBytes)
	if err != nil {
		return err
	}
	return store.VisitRecords(recs, visit)
}

// readChanges reads a page of the change log; maxBytes 0 is no bound. The
// rows past the bound still cross the wire (the statement has a LIMIT in
// changes), but are not kept.
func (db *DB) readChanges(ctx context.Context, after store.Cursor, limit, maxBytes int) ([]store.ChangeRecord, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("postgres: read changes: limit must be positive: %w", store.ErrInvalidArgument)
	}
	if err := db.enter(); err != nil {
		return nil, err
	}
	defer db.leave()
	// One statement, so one snapshot and one round trip: the compaction
	// bound comes on every row, and on a row of its own without a change
	// when none follows after.
	rows, err := db.pool.Query(ctx, `SELECT m.compacted, c.cursor, c.type, c.calendar_id, c.provider, c.commit_ns, c.data
		FROM (SELECT value::bigint AS compacted FROM meta WHERE key = $3) m
		LEFT JOIN LATERAL (SELECT cursor, type, calendar_id, provider, commit_ns, data FROM changes
			WHERE cursor > $1 AND $1 >= m.compacted ORDER BY cursor LIMIT $2) c ON TRUE
		ORDER BY c.cursor`, int64(after), limit, metaCompacted)
	if err != nil {
		return nil, classify(fmt.Errorf("postgres: read changes: %w", err))
	}
	defer rows.Close()
	out := make([]store.ChangeRecord, 0, min(limit, 4096))
	compacted := int64(-1)
	size := 0
	for rows.Next() {
		var r store.ChangeRecord
		var cursor, commitNs *int64
		var typ *int32
		var calendarID, provider *string
		if err := rows.Scan(&compacted, &cursor, &typ, &calendarID, &provider, &commitNs, &r.Change); err != nil {
			return nil, classify(fmt.Errorf("postgres: read changes: %w", err))
		}
		if cursor == nil {
			continue
		}
		r.Cursor = store.Cursor(*cursor)
		r.Type = calsyncv1.ChangeType(*typ)
		r.CalendarID, r.Provider = *calendarID, *provider
		r.CommitTime = time.Unix(0, *commitNs).UTC()
		out = append(out, r)
		if size += len(r.Change); maxBytes > 0 && size >= maxBytes {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return nil, classify(fmt.Errorf("postgres: read changes: %w", err))
	}
	if compacted < 0 {
		return nil, fmt.Errorf("postgres: read changes: the change log's compaction bound is missing")
	}
	if after < store.Cursor(compacted) {
		return nil, fmt.Errorf("postgres: cursor %d is older than the change log (compacted up to %d): %w",
			after, compacted, store.ErrCompacted)
	}
	return out, nil
}

// where builds a WHERE clause; conditions use ? for their arguments, which
// String numbers as PostgreSQL's $n.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	s := " WHERE " + strings.Join(w.conds, " AND ")
	var b strings.Builder
	n := 0
	for _, r := range s {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func limit(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(" LIMIT %d", n)
}
