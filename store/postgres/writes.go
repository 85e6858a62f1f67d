package postgres

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/rowcodec"
)

// writeBuffer holds a write transaction's writes until they are sent, all
// in one round trip (see [tx.flush]), instead of one round trip each while
// the instance's writer, and across replicas the change log's append
// lock, waits. The transaction's reads look here first, so they see its
// own writes as if they had been sent.
//
// An event, calendar or sync state written twice is sent once, as last
// written: the transaction's outcome is the same.
type writeBuffer struct {
	events     map[string]rowcodec.EventRow
	calendars  map[string]bufferedCalendar
	syncStates map[string]store.SyncState
	// changes are the appended changes not sent yet, in cursor order.
	changes []store.ChangeRecord
	// finishes are the FinishDelivery calls not sent yet.
	finishes []bufferedFinish
}

type bufferedCalendar struct {
	provider, providerCalendarID string
	data                         []byte
}

type bufferedFinish struct {
	id, processNs int64
	state         int32
	note          string
}

func (w *writeBuffer) empty() bool {
	return len(w.events) == 0 && len(w.calendars) == 0 && len(w.syncStates) == 0 &&
		len(w.changes) == 0 && len(w.finishes) == 0
}

// reset drops the buffered writes.
func (w *writeBuffer) reset() {
	clear(w.events)
	clear(w.calendars)
	clear(w.syncStates)
	w.changes = w.changes[:0]
	w.finishes = w.finishes[:0]
}

func (w *writeBuffer) putEvent(r rowcodec.EventRow) {
	if w.events == nil {
		w.events = map[string]rowcodec.EventRow{}
	}
	w.events[r.ID] = r
}

func (w *writeBuffer) putCalendar(id string, c bufferedCalendar) {
	if w.calendars == nil {
		w.calendars = map[string]bufferedCalendar{}
	}
	w.calendars[id] = c
}

func (w *writeBuffer) putSyncState(s store.SyncState) {
	if w.syncStates == nil {
		w.syncStates = map[string]store.SyncState{}
	}
	// Stored as it will read back: at the store's precision.
	s.Watermark = fromNanos(nullNanos(s.Watermark))
	s.LastFullSync = fromNanos(nullNanos(s.LastFullSync))
	w.syncStates[s.CalendarID] = s
}

// queue adds the buffered writes to b, in a fixed order per table (ids
// ascending) so that transactions writing the same rows lock them in the
// same order, and empties the buffer. head, if positive, is the change
// log's new head. A FinishDelivery that finds no delivery fails the batch
// with ErrNotFound.
func (w *writeBuffer) queue(b *pgx.Batch, head int64) {
	if len(w.calendars) > 0 {
		ids := sortedKeys(w.calendars)
		providers, pids, data := make([]string, len(ids)), make([]string, len(ids)), make([][]byte, len(ids))
		for i, id := range ids {
			c := w.calendars[id]
			providers[i], pids[i], data[i] = c.provider, c.providerCalendarID, c.data
		}
		b.Queue(`INSERT INTO calendars (id, provider, provider_calendar_id, data)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])
			ON CONFLICT (id) DO UPDATE SET provider = excluded.provider,
				provider_calendar_id = excluded.provider_calendar_id, data = excluded.data`,
			ids, providers, pids, data)
	}
	if len(w.events) > 0 {
		ids := sortedKeys(w.events)
		n := len(ids)
		cals, provs := make([]string, n), make([]string, n)
		ss, sn, es, en, upd := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		del := make([]bool, n)
		data, raw := make([][]byte, n), make([][]byte, n)
		for i, id := range ids {
			r := w.events[id]
			cals[i], provs[i] = r.CalendarID, r.Provider
			ss[i], sn[i], es[i], en[i], upd[i] = r.Start.Sec, r.Start.Nsec, r.End.Sec, r.End.Nsec, r.UpdateNs
			del[i], data[i], raw[i] = r.Deleted, r.Data, r.Raw
		}
		b.Queue(`INSERT INTO events (id, calendar_id, provider, start_sec, start_nsec, end_sec, end_nsec,
				update_ns, deleted, data, raw)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
				$8::bigint[], $9::boolean[], $10::bytea[], $11::bytea[])
			ON CONFLICT (id) DO UPDATE SET calendar_id = excluded.calendar_id, provider = excluded.provider,
				start_sec = excluded.start_sec, start_nsec = excluded.start_nsec,
				end_sec = excluded.end_sec, end_nsec = excluded.end_nsec, update_ns = excluded.update_ns,
				deleted = excluded.deleted, data = excluded.data, raw = excluded.raw`,
			ids, cals, provs, ss, sn, es, en, upd, del, data, raw)
	}
	if len(w.syncStates) > 0 {
		ids := sortedKeys(w.syncStates)
		wms, fulls := make([]*int64, len(ids)), make([]*int64, len(ids))
		for i, id := range ids {
			s := w.syncStates[id]
			wms[i], fulls[i] = nullNanos(s.Watermark), nullNanos(s.LastFullSync)
		}
		b.Queue(`INSERT INTO sync_state (calendar_id, watermark_ns, last_full_sync_ns)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
			ON CONFLICT (calendar_id) DO UPDATE SET watermark_ns = excluded.watermark_ns,
				last_full_sync_ns = excluded.last_full_sync_ns`, ids, wms, fulls)
	}
	if len(w.changes) > 0 {
		n := len(w.changes)
		cursors, types, cals, provs, commits, data := make([]int64, n), make([]int32, n), make([]string, n),
			make([]string, n), make([]int64, n), make([][]byte, n)
		for i, c := range w.changes {
			cursors[i], types[i], cals[i], provs[i] = int64(c.Cursor), int32(c.Type), c.CalendarID, c.Provider
			commits[i], data[i] = c.CommitTime.UnixNano(), c.Change
		}
		b.Queue(`INSERT INTO changes (cursor, type, calendar_id, provider, commit_ns, data)
			SELECT * FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::text[], $5::bigint[], $6::bytea[])`,
			cursors, types, cals, provs, commits, data)
	}
	if head > 0 {
		b.Queue(`UPDATE change_log_head SET head = $1`, head)
	}
	for _, f := range w.finishes {
		b.Queue(`UPDATE deliveries SET state = $1, process_ns = $2, next_attempt_ns = NULL,
			last_error = CASE WHEN $3 = '' THEN last_error ELSE $4 END WHERE id = $5`,
			f.state, f.processNs, f.note, []byte(f.note), f.id).Exec(func(tag pgconn.CommandTag) error {
			if tag.RowsAffected() == 0 {
				return fmt.Errorf("postgres: delivery %d: %w", f.id, store.ErrNotFound)
			}
			return nil
		})
	}
	w.reset()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// getEvent reads an event, as this transaction's buffered writes left it.
func (t *tx) getEvent(ctx context.Context, id string, withRaw bool) (*calsyncv1.CalendarEvent, error) {
	if r, ok := t.buf.events[id]; ok {
		raw := r.Raw
		if !withRaw {
			raw = nil
		}
		return rowcodec.DecodeEvent(r.Data, raw)
	}
	return getEvent(ctx, t.tx, id, withRaw)
}

// flush sends the buffered writes and the change log's new head in one
// round trip, followed by the statements queued in then (a savepoint's
// RELEASE, say), if any.
func (t *tx) flush(ctx context.Context, then *pgx.Batch) error {
	head := int64(0)
	if t.appending && t.head != t.sentHead {
		head = t.head
	}
	if t.buf.empty() && head == 0 && (then == nil || then.Len() == 0) {
		return nil
	}
	// A FinishDelivery's outcome is checked here, not by the server: a
	// COMMIT or RELEASE sent in the same batch would go through even when
	// the check fails. Such writes take a round trip of their own.
	checked := len(t.buf.finishes) > 0
	b := &pgx.Batch{}
	t.buf.queue(b, head)
	if then != nil && !checked {
		b.QueuedQueries = append(b.QueuedQueries, then.QueuedQueries...)
		then = nil
	}
	if err := t.tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("postgres: write: %w", err)
	}
	if head > 0 {
		t.sentHead = head
	}
	if then != nil && then.Len() > 0 {
		if err := t.tx.SendBatch(ctx, then).Close(); err != nil {
			return fmt.Errorf("postgres: write: %w", err)
		}
	}
	return nil
}

// releaseSavepoint is the statement that ends an Update's savepoint in a
// shared transaction, sent with its writes.
func releaseSavepoint() *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue("RELEASE u")
	return b
}
