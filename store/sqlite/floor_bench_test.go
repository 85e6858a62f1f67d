package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/cputime"
	"github.com/calsync/calsync/store/internal/rowcodec"
)

// BenchmarkCommitterFloor measures what SQLite alone costs for the rows a
// postpress webhook applied at intake writes, so that the group
// committer's CPU per delivery can be read against it. It runs only the
// statements those rows need, on the store's schema, writer connection,
// VFS and synchronous=FULL: per delivery the dedupe probe, the event's
// UPDATE, the change's INSERT and the delivery's INSERT (the last three in
// the store's own words), with the rows encoded before the clock starts;
// each transaction of batch deliveries is committed and synced.
//
// Its data is that of BenchmarkEnqueueApply/apply=update-event (1,000
// events updated in turn, each keeping its calendar and start; an 800-byte
// body), which runs the same deliveries through the store's own path. The
// floor has none of the store's Go work (requests, encodings, the cache of
// events, the hand-off to callers), so the gap between the two is the most
// any change above SQLite could take off the committer.
func BenchmarkCommitterFloor(b *testing.B) {
	body := []byte(`{"event":"calendar_event_updated","data":{"calendar_id":"` + strings.Repeat("x", 800) + `"}}`)
	event := func(i int64) *calsyncv1.CalendarEvent {
		return BenchEvent(fmt.Sprint("evt_", i%1000), fmt.Sprint("cal_", i%100), time.Date(2030, 2, 1+int(i%27), 10, 0, 0, 0, time.UTC))
	}
	for _, batch := range []int{2, 20, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			benchFloor(b, batch, body, event)
		})
	}
}

// BenchEvent is the event the store's write benchmarks put: a postpress
// meeting of an hour from start, with a description of 600 bytes and two
// attendees. (Exported for the package's external benchmarks.)
func BenchEvent(id, calendarID string, start time.Time) *calsyncv1.CalendarEvent {
	return &calsyncv1.CalendarEvent{
		Id:          id,
		CalendarId:  calendarID,
		Provider:    "postpress",
		Title:       "Weekly sync",
		Description: strings.Repeat("d", 600),
		StartTime:   timestamppb.New(start),
		EndTime:     timestamppb.New(start.Add(time.Hour)),
		Attendees:   []*calsyncv1.Attendee{{Email: "a@example.com"}, {Email: "b@example.com"}},
	}
}

func benchFloor(b *testing.B, batch int, body []byte, event func(int64) *calsyncv1.CalendarEvent) {
	ctx := context.Background()
	db := openTemp(b, Options{Synchronous: "FULL"})
	rows := make([]rowcodec.EventRow, 1000)
	changes := make([][]byte, 1000)
	for i := range rows {
		e := event(int64(i))
		r, err := rowcodec.EncodeEvent(e)
		if err != nil {
			b.Fatal(err)
		}
		rows[i] = r
		c, err := rowcodec.EncodeChange(&calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED, Event: e}, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		changes[i] = c
	}
	if err := db.lockWriter(ctx); err != nil {
		b.Fatal(err)
	}
	defer db.unlockWriter()
	err := db.writeTx(ctx, func(q *connQuerier) error {
		for _, r := range rows {
			if _, err := q.ExecContext(ctx, `INSERT INTO events (id, calendar_id, provider, start_sec, start_nsec, end_sec, end_nsec,
					update_ns, deleted, data, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				r.ID, r.CalendarID, r.Provider, r.Start.Sec, r.Start.Nsec, r.End.Sec, r.End.Nsec, r.UpdateNs, r.Deleted, r.Data, r.Raw); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	db.sync.flush()

	window := db.dedupeWindow.Nanoseconds()
	var n int64
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cputime.Process()
	for done := 0; done < b.N; done += batch {
		err := db.writeTx(ctx, func(q *connQuerier) error {
			for range min(batch, b.N-done) {
				n++
				r := rows[n%1000]
				key, recv := fmt.Sprint("hash-", n), time.Now().UnixNano()
				var dup int64
				err := q.QueryRowContext(ctx, `SELECT id FROM deliveries
					WHERE provider = ? AND dedup_key = ? AND receive_ns > ? AND receive_ns < ?`,
					"postpress", key, recv-window, recv+window).Scan(&dup)
				if err == nil {
					return fmt.Errorf("delivery %s found twice", key)
				} else if !errors.Is(err, sql.ErrNoRows) {
					return err
				}
				if _, err := q.ExecContext(ctx, updateEventInPlace,
					r.Provider, r.End.Sec, r.End.Nsec, recv, r.Deleted, r.Data, r.Raw,
					r.ID, r.CalendarID, r.Start.Sec, r.Start.Nsec); err != nil {
					return err
				}
				if _, err := q.ExecContext(ctx, insertFirstChange,
					int64(calsyncv1.ChangeType_CHANGE_TYPE_UPDATED), r.CalendarID, r.Provider, recv, changes[n%1000]); err != nil {
					return err
				}
				// The inbox's insert of one row (its last chunk size).
				if _, err := q.ExecContext(ctx, insertQueries[len(chunkSizes)-1],
					"postpress", key, "", "calendar_event_updated", r.CalendarID, body,
					int64(calsyncv1.DeliveryState_DELIVERY_STATE_DONE), "", recv, recv, int64(0)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		db.sync.flush()
	}
	b.ReportMetric(float64((cputime.Process()-cpu0).Microseconds())/float64(b.N), "cpu-µs/delivery")
}
