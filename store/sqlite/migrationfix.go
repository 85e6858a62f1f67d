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
	"github.com/calsync/calsync/store/internal/rowcodec"
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
	hi := rowcodec.Instant{Sec: math.MaxInt64 / second, Nsec: math.MaxInt64 % second}
	lo := rowcodec.Instant{Sec: math.MinInt64/second - 1, Nsec: second + math.MinInt64%second}
	rows, err := tx.QueryContext(ctx, `SELECT data FROM events
		WHERE (start_sec = ? AND start_nsec = ?) OR (start_sec = ? AND start_nsec = ?)
		   OR (end_sec = ? AND end_nsec = ?) OR (end_sec = ? AND end_nsec = ?)`,
		hi.Sec, hi.Nsec, lo.Sec, lo.Nsec, hi.Sec, hi.Nsec, lo.Sec, lo.Nsec)
	if err != nil {
		return fmt.Errorf("find clamped event times: %w", err)
	}
	// The rows are read in full before any is rewritten: the transaction
	// has one connection, busy until the rows are closed.
	var fixed []rowcodec.EventRow
	var unencodable []string
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			rows.Close()
			return fmt.Errorf("find clamped event times: %w", err)
		}
		e, err := rowcodec.DecodeEvent(data, nil)
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
		r := rowcodec.EventRow{ID: e.GetId(), Start: rowcodec.TsInstant(e.GetStartTime())}
		r.End = r.Start
		if e.GetEndTime() != nil {
			r.End = rowcodec.TsInstant(e.GetEndTime())
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
			r.Start.Sec, r.Start.Nsec, r.End.Sec, r.End.Nsec, r.ID); err != nil {
			return fmt.Errorf("re-encode times of event %s: %w", r.ID, err)
		}
	}
	return nil
}
