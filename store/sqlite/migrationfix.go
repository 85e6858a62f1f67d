package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/calsync/calsync/model"
)

// migrationFixes holds, by the name of a migration file without its number,
// work a migration needs that SQL cannot do. A fix runs in the migration's
// transaction right after its script. Keying by name rather than number
// lets migrations be renumbered.
var migrationFixes = map[string]func(ctx context.Context, tx *sql.Tx, log *slog.Logger) error{
	"event_times_seconds_nanos.sql": reencodeClampedEventTimes,
}

// runMigrationFix runs the fix of the migration file name, if it has one.
func runMigrationFix(ctx context.Context, tx *sql.Tx, name string, log *slog.Logger) error {
	_, base, _ := strings.Cut(name, "_")
	fix, ok := migrationFixes[base]
	if !ok {
		return nil
	}
	return fix(ctx, tx, log)
}

// reencodeClampedEventTimes recomputes the start and end columns of events
// whose times the old nanosecond columns had clamped to the bounds of an
// int64 (events before 1677 or after 2262), from the events themselves. An
// event that truly started at a bound is rewritten with the same values.
//
// Among those rows are the only events an older calsync could store that
// no API encoding can carry (times outside years 1 to 9999, from all-day
// events widened past the range): each one made every REST listing and
// snapshot fail. They are removed, with a warning naming them; a later
// version from the provider comes back as a new event.
func reencodeClampedEventTimes(ctx context.Context, tx *sql.Tx, log *slog.Logger) error {
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
	var unencodable []string
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
		if err := model.CheckEncodable(e); err != nil {
			log.Warn("sqlite migration removes an event no API encoding can carry",
				"event_id", e.GetId(), "calendar_id", e.GetCalendarId(), "err", err)
			unencodable = append(unencodable, e.GetId())
			continue
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
	for _, id := range unencodable {
		if _, err := tx.ExecContext(ctx, `DELETE FROM events WHERE id = ?`, id); err != nil {
			return fmt.Errorf("remove event %s: %w", id, err)
		}
	}
	for _, r := range fixed {
		if _, err := tx.ExecContext(ctx, `UPDATE events SET start_sec = ?, start_nsec = ?, end_sec = ?, end_nsec = ? WHERE id = ?`,
			r.start.sec, r.start.nsec, r.end.sec, r.end.nsec, r.id); err != nil {
			return fmt.Errorf("re-encode times of event %s: %w", r.id, err)
		}
	}
	return nil
}
