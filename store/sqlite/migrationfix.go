package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"
	"time"
)

// migrationFixes holds, by the name of a migration file without its number,
// work a migration needs that SQL cannot do. A fix runs in the migration's
// transaction right after its script. Keying by name rather than number
// lets migrations be renumbered.
var migrationFixes = map[string]func(ctx context.Context, tx *sql.Tx) error{
	"event_times_seconds_nanos.sql": reencodeClampedEventTimes,
}

// runMigrationFix runs the fix of the migration file name, if it has one.
func runMigrationFix(ctx context.Context, tx *sql.Tx, name string) error {
	_, base, _ := strings.Cut(name, "_")
	fix, ok := migrationFixes[base]
	if !ok {
		return nil
	}
	return fix(ctx, tx)
}

// reencodeClampedEventTimes recomputes the start and end columns of events
// whose times the old nanosecond columns had clamped to the bounds of an
// int64 (events before 1677 or after 2262), from the events themselves. An
// event that truly started at a bound is rewritten with the same values.
func reencodeClampedEventTimes(ctx context.Context, tx *sql.Tx) error {
	const second = int64(time.Second)
	hi := instant{sec: math.MaxInt64 / second, nsec: math.MaxInt64 % second}
	lo := instant{sec: math.MinInt64/second - 1, nsec: second + math.MinInt64%second}
	rows, err := tx.QueryContext(ctx, `SELECT data FROM events
		WHERE (start_sec = ? AND start_nsec = ?) OR (start_sec = ? AND start_nsec = ?)
		   OR (end_sec = ? AND end_nsec = ?) OR (end_sec = ? AND end_nsec = ?)`,
		hi.sec, hi.nsec, lo.sec, lo.nsec, hi.sec, hi.nsec, lo.sec, lo.nsec)
	if err != nil {
		return fmt.Errorf("find clamped event times: %w", err)
	}
	// The rows are read in full before any is rewritten: the transaction
	// has one connection, busy until the rows are closed.
	var fixed []eventRow
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			rows.Close()
			return fmt.Errorf("find clamped event times: %w", err)
		}
		e, err := decodeEvent(data, nil)
		if err != nil {
			rows.Close()
			return err
		}
		r := eventRow{id: e.GetId(), start: tsInstant(e.GetStartTime())}
		r.end = r.start
		if e.GetEndTime() != nil {
			r.end = tsInstant(e.GetEndTime())
		}
		fixed = append(fixed, r)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find clamped event times: %w", err)
	}
	for _, r := range fixed {
		if _, err := tx.ExecContext(ctx, `UPDATE events SET start_sec = ?, start_nsec = ?, end_sec = ?, end_nsec = ? WHERE id = ?`,
			r.start.sec, r.start.nsec, r.end.sec, r.end.nsec, r.id); err != nil {
			return fmt.Errorf("re-encode times of event %s: %w", r.id, err)
		}
	}
	return nil
}
