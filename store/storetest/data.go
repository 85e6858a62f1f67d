package storetest

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
)

var calendarCases = []testCase{
	{"PutGet", func(t *testing.T, h *harness) {
		ctx := context.Background()
		c := calendar("cal_a", "recall", "rc-1")
		mustPut(t, h.s, c)
		got, err := h.s.GetCalendar(ctx, "cal_a")
		must(t, "GetCalendar", err)
		diffProto(t, "calendar", c, got)

		// Replacing it keeps one calendar; the transaction sees its own write.
		c2 := proto.Clone(c).(*calsyncv1.Calendar)
		c2.Email = "new@example.com"
		c2.Status = calsyncv1.CalendarStatus_CALENDAR_STATUS_DISCONNECTED
		mustUpdate(t, h.s, func(tx store.Tx) error {
			if err := tx.PutCalendar(ctx, c2); err != nil {
				return err
			}
			got, err := tx.GetCalendar(ctx, "cal_a")
			must(t, "Tx.GetCalendar", err)
			diffProto(t, "calendar in tx", c2, got)
			return nil
		})
		got, err = h.s.GetCalendar(ctx, "cal_a")
		must(t, "GetCalendar", err)
		diffProto(t, "replaced calendar", c2, got)
		all, err := h.s.ListCalendars(ctx, store.CalendarQuery{})
		must(t, "ListCalendars", err)
		diffProto(t, "calendars", []*calsyncv1.Calendar{c2}, all)
	}},
	{"ErrNotFound", func(t *testing.T, h *harness) {
		ctx := context.Background()
		_, err := h.s.GetCalendar(ctx, "cal_missing")
		wantErr(t, "GetCalendar", err, store.ErrNotFound)
		err = h.s.Update(ctx, func(tx store.Tx) error {
			_, err := tx.GetCalendar(ctx, "cal_missing")
			return err
		})
		wantErr(t, "Tx.GetCalendar", err, store.ErrNotFound)
	}},
	{"ErrInvalidArgument", func(t *testing.T, h *harness) {
		ctx := context.Background()
		for name, c := range map[string]*calsyncv1.Calendar{
			"no id":       {Provider: "recall"},
			"no provider": {Id: "cal_x"},
		} {
			err := h.s.Update(ctx, func(tx store.Tx) error { return tx.PutCalendar(ctx, c) })
			wantErr(t, "PutCalendar "+name, err, store.ErrInvalidArgument)
		}
	}},
	{"ListFiltersAndPaging", func(t *testing.T, h *harness) {
		ctx := context.Background()
		cals := []*calsyncv1.Calendar{
			calendar("cal_a", "recall", "r1"),
			calendar("cal_b", "postpress", "owner@example.com"),
			calendar("cal_c", "recall", "r2"),
			calendar("cal_d", "postpress", "other@example.com"),
			calendar("cal_e", "recall", "r3"),
		}
		// Stored out of order: listing sorts by id.
		mustPut(t, h.s, cals[3], cals[0], cals[4], cals[1], cals[2])

		list := func(q store.CalendarQuery) []string {
			t.Helper()
			got, err := h.s.ListCalendars(ctx, q)
			must(t, "ListCalendars", err)
			out := []string{}
			for _, c := range got {
				out = append(out, c.GetId())
			}
			return out
		}
		diffIDs(t, "all", []string{"cal_a", "cal_b", "cal_c", "cal_d", "cal_e"}, list(store.CalendarQuery{}))
		diffIDs(t, "recall", []string{"cal_a", "cal_c", "cal_e"}, list(store.CalendarQuery{Provider: "recall"}))
		diffIDs(t, "by provider calendar id", []string{"cal_b"},
			list(store.CalendarQuery{Provider: "postpress", ProviderCalendarID: "owner@example.com"}))
		diffIDs(t, "provider calendar id alone", []string{"cal_c"}, list(store.CalendarQuery{ProviderCalendarID: "r2"}))
		diffIDs(t, "no match", nil, list(store.CalendarQuery{Provider: "other"}))
		diffIDs(t, "after", []string{"cal_d", "cal_e"}, list(store.CalendarQuery{AfterID: "cal_c"}))
		diffIDs(t, "limit", []string{"cal_a", "cal_b"}, list(store.CalendarQuery{Limit: 2}))

		// Paging through recall calendars two at a time visits each once.
		var paged []string
		q := store.CalendarQuery{Provider: "recall", Limit: 2}
		for {
			page := list(q)
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			q.AfterID = page[len(page)-1]
		}
		diffIDs(t, "paged", []string{"cal_a", "cal_c", "cal_e"}, paged)
	}},
}

var eventCases = []testCase{
	{"PutGetWithAndWithoutRaw", func(t *testing.T, h *harness) {
		ctx := context.Background()
		e := withRaw(t, event("evt_a", "cal_a", at(0), at(time.Hour)))
		mustPut(t, h.s, e)

		got, err := h.s.GetEvent(ctx, "evt_a", true)
		must(t, "GetEvent with raw", err)
		diffProto(t, "event with raw", e, got)

		got, err = h.s.GetEvent(ctx, "evt_a", false)
		must(t, "GetEvent", err)
		noRaw := proto.Clone(e).(*calsyncv1.CalendarEvent)
		noRaw.Raw = nil
		diffProto(t, "event without raw", noRaw, got)

		mustUpdate(t, h.s, func(tx store.Tx) error {
			got, err := tx.GetEvent(ctx, "evt_a", true)
			must(t, "Tx.GetEvent", err)
			diffProto(t, "event in tx (raw included)", e, got)
			got, err = tx.GetEvent(ctx, "evt_a", false)
			must(t, "Tx.GetEvent", err)
			diffProto(t, "event in tx without raw", noRaw, got)
			return nil
		})

		// Replacing the event without raw drops the old payload.
		mustPut(t, h.s, noRaw)
		got, err = h.s.GetEvent(ctx, "evt_a", true)
		must(t, "GetEvent", err)
		diffProto(t, "replaced event", noRaw, got)
	}},
	{"PutRawJSON", func(t *testing.T, h *harness) {
		ctx := context.Background()
		// Escapes, bytes that are not UTF-8, a key given twice, nesting,
		// numbers, leading white space: what a webhook body may hold.
		body := []byte(" \n{\"title\":\"caf\\u00e9 \\\"x\\\"\",\"bad\":\"\xff\xfe\",\"n\":[1.5e3,-0,12345678901234567890,true,null],\"k\":1,\"k\":{\"deep\":[{\"a\":[]}]}}\n")
		raw, err := model.CheckRawJSON(body)
		must(t, "CheckRawJSON", err)
		tree, err := model.StructFromJSON(body)
		must(t, "StructFromJSON", err)
		// e.Raw is not read: the payload is raw.
		e := event("evt_j", "cal_a", at(0), at(time.Hour))
		mustUpdate(t, h.s, func(tx store.Tx) error {
			must(t, "PutEventRawJSON", tx.PutEventRawJSON(ctx, e, raw))
			e.Raw = tree
			got, err := tx.GetEvent(ctx, "evt_j", true)
			must(t, "Tx.GetEvent", err)
			diffProto(t, "event in tx (raw included)", e, got)
			return nil
		})
		got, err := h.s.GetEvent(ctx, "evt_j", true)
		must(t, "GetEvent with raw", err)
		diffProto(t, "event with raw", e, got)
		list, err := h.s.ListEvents(ctx, store.EventQuery{IncludeRaw: true})
		must(t, "ListEvents", err)
		diffProto(t, "listed with raw", []*calsyncv1.CalendarEvent{e}, list)

		// The zero RawJSON is no payload.
		e2 := event("evt_none", "cal_a", at(0), at(time.Hour))
		mustUpdate(t, h.s, func(tx store.Tx) error { return tx.PutEventRawJSON(ctx, e2, model.RawJSON{}) })
		got, err = h.s.GetEvent(ctx, "evt_none", true)
		must(t, "GetEvent", err)
		diffProto(t, "event without payload", e2, got)

		// Only the payload goes unchecked: the other fields are checked.
		bad := event("evt_bad", "cal_a", at(0), at(time.Hour))
		bad.Title = "\xff"
		err = h.s.Update(ctx, func(tx store.Tx) error { return tx.PutEventRawJSON(ctx, bad, raw) })
		wantErr(t, "PutEventRawJSON of a title that is not UTF-8", err, store.ErrInvalidArgument)

		// Replacing it through PutEvent encodes the new payload.
		e3 := withRaw(t, event("evt_j", "cal_a", at(0), at(time.Hour)))
		mustPut(t, h.s, e3)
		got, err = h.s.GetEvent(ctx, "evt_j", true)
		must(t, "GetEvent", err)
		diffProto(t, "replaced event", e3, got)
	}},
	{"ErrNotFound", func(t *testing.T, h *harness) {
		ctx := context.Background()
		_, err := h.s.GetEvent(ctx, "evt_missing", false)
		wantErr(t, "GetEvent", err, store.ErrNotFound)
		err = h.s.Update(ctx, func(tx store.Tx) error {
			_, err := tx.GetEvent(ctx, "evt_missing", false)
			return err
		})
		wantErr(t, "Tx.GetEvent", err, store.ErrNotFound)
	}},
	{"ErrInvalidArgument", func(t *testing.T, h *harness) {
		ctx := context.Background()
		for name, e := range map[string]*calsyncv1.CalendarEvent{
			"no id":          {CalendarId: "cal_a", Provider: "recall"},
			"no calendar id": {Id: "evt_a", Provider: "recall"},
			"no provider":    {Id: "evt_a", CalendarId: "cal_a"},
		} {
			err := h.s.Update(ctx, func(tx store.Tx) error { return tx.PutEvent(ctx, e) })
			wantErr(t, "PutEvent "+name, err, store.ErrInvalidArgument)
		}
	}},
	{"Tombstones", func(t *testing.T, h *harness) {
		ctx := context.Background()
		live := event("evt_live", "cal_a", at(0), at(time.Hour))
		gone := event("evt_gone", "cal_a", at(time.Hour), at(2*time.Hour))
		gone.Deleted = true
		gone.Status = calsyncv1.EventStatus_EVENT_STATUS_CANCELLED
		mustPut(t, h.s, live, gone)

		got, err := h.s.GetEvent(ctx, "evt_gone", false)
		must(t, "GetEvent tombstone", err)
		diffProto(t, "tombstone", gone, got)

		list, err := h.s.ListEvents(ctx, store.EventQuery{})
		must(t, "ListEvents", err)
		diffIDs(t, "without deleted", []string{"evt_live"}, ids(list))
		list, err = h.s.ListEvents(ctx, store.EventQuery{IncludeDeleted: true})
		must(t, "ListEvents", err)
		diffIDs(t, "with deleted", []string{"evt_live", "evt_gone"}, ids(list))
	}},
	{"TimeRangeOverlap", func(t *testing.T, h *harness) {
		ctx := context.Background()
		start, end := at(time.Hour), at(3*time.Hour) // [10:00, 12:00)
		mustPut(t, h.s,
			event("evt_01_ends_at_start", "cal_a", at(0), start),
			event("evt_02_ends_just_after_start", "cal_a", at(0), start.Add(time.Nanosecond)),
			event("evt_03_spans_range", "cal_a", at(0), at(4*time.Hour)),
			event("evt_04_starts_at_start", "cal_a", start, start.Add(time.Minute)),
			event("evt_05_inside", "cal_a", at(2*time.Hour), at(2*time.Hour+30*time.Minute)),
			event("evt_06_starts_just_before_end", "cal_a", end.Add(-time.Nanosecond), at(5*time.Hour)),
			event("evt_07_starts_at_end", "cal_a", end, at(5*time.Hour)),
			event("evt_08_after", "cal_a", at(6*time.Hour), at(7*time.Hour)),
		)
		list := func(q store.EventQuery) []string {
			t.Helper()
			got, err := h.s.ListEvents(ctx, q)
			must(t, "ListEvents", err)
			return ids(got)
		}
		diffIDs(t, "overlapping [start, end)", []string{
			"evt_02_ends_just_after_start", "evt_03_spans_range", "evt_04_starts_at_start",
			"evt_05_inside", "evt_06_starts_just_before_end",
		}, list(store.EventQuery{Start: start, End: end}))
		diffIDs(t, "ending after start", []string{
			"evt_02_ends_just_after_start", "evt_03_spans_range", "evt_04_starts_at_start",
			"evt_05_inside", "evt_06_starts_just_before_end", "evt_07_starts_at_end", "evt_08_after",
		}, list(store.EventQuery{Start: start}))
		diffIDs(t, "starting before end", []string{
			"evt_01_ends_at_start", "evt_02_ends_just_after_start", "evt_03_spans_range",
			"evt_04_starts_at_start", "evt_05_inside", "evt_06_starts_just_before_end",
		}, list(store.EventQuery{End: end}))
	}},
	{"UpdatedSince", func(t *testing.T, h *harness) {
		ctx := context.Background()
		old := event("evt_old", "cal_a", at(0), at(time.Hour))
		old.UpdateTime = ts(at(-time.Hour))
		edge := event("evt_edge", "cal_a", at(time.Hour), at(2*time.Hour))
		edge.UpdateTime = ts(at(0))
		fresh := event("evt_fresh", "cal_a", at(-time.Hour), at(0))
		fresh.UpdateTime = ts(at(time.Minute))
		mustPut(t, h.s, old, edge, fresh)
		got, err := h.s.ListEvents(ctx, store.EventQuery{UpdatedSince: at(0)})
		must(t, "ListEvents", err)
		diffIDs(t, "updated at or after", []string{"evt_fresh", "evt_edge"}, ids(got))
	}},
	{"IncludeRaw", func(t *testing.T, h *harness) {
		ctx := context.Background()
		e := withRaw(t, event("evt_a", "cal_a", at(0), at(time.Hour)))
		mustPut(t, h.s, e)
		got, err := h.s.ListEvents(ctx, store.EventQuery{IncludeRaw: true})
		must(t, "ListEvents", err)
		diffProto(t, "with raw", []*calsyncv1.CalendarEvent{e}, got)
		got, err = h.s.ListEvents(ctx, store.EventQuery{})
		must(t, "ListEvents", err)
		if len(got) != 1 || got[0].GetRaw() != nil {
			t.Fatalf("ListEvents without IncludeRaw returned %v", got)
		}
	}},
	{"KeysetPagingAcrossEqualStartTimes", func(t *testing.T, h *harness) {
		ctx := context.Background()
		// Several events share start times so that only the id orders them.
		var msgs []any
		want := []string{"evt_b1", "evt_b2", "evt_b3", "evt_c1", "evt_c2", "evt_c3", "evt_c4", "evt_d1"}
		starts := map[byte]time.Time{'b': at(0), 'c': at(time.Hour), 'd': at(2 * time.Hour)}
		for i := len(want) - 1; i >= 0; i-- {
			id := want[i]
			s := starts[id[4]]
			msgs = append(msgs, event(id, "cal_"+id[5:], s, s.Add(time.Hour)))
		}
		mustPut(t, h.s, msgs...)
		all, err := h.s.ListEvents(ctx, store.EventQuery{})
		must(t, "ListEvents", err)
		diffIDs(t, "order", want, ids(all))

		for _, size := range []int{1, 2, 3} {
			var got []string
			q := store.EventQuery{Limit: size}
			for {
				page, err := h.s.ListEvents(ctx, q)
				must(t, "ListEvents", err)
				if len(page) > size {
					t.Fatalf("page of %d with limit %d", len(page), size)
				}
				if len(page) == 0 {
					break
				}
				got = append(got, ids(page)...)
				last := page[len(page)-1]
				q.After = &store.EventKey{StartTime: last.GetStartTime().AsTime(), ID: last.GetId()}
			}
			diffIDs(t, "paged", want, got)
		}
	}},
	{"AllCalendars", func(t *testing.T, h *harness) {
		ctx := context.Background()
		mustPut(t, h.s,
			event("evt_a1", "cal_a", at(0), at(time.Hour)),
			event("evt_b1", "cal_b", at(time.Minute), at(time.Hour)),
			event("evt_a2", "cal_a", at(2*time.Minute), at(time.Hour)),
		)
		for _, id := range []string{"", "-"} {
			got, err := h.s.ListEvents(ctx, store.EventQuery{CalendarID: id})
			must(t, "ListEvents", err)
			diffIDs(t, "calendar "+id, []string{"evt_a1", "evt_b1", "evt_a2"}, ids(got))
		}
		got, err := h.s.ListEvents(ctx, store.EventQuery{CalendarID: "cal_a"})
		must(t, "ListEvents", err)
		diffIDs(t, "one calendar", []string{"evt_a1", "evt_a2"}, ids(got))
		got, err = h.s.ListEvents(ctx, store.EventQuery{CalendarID: "cal_missing"})
		must(t, "ListEvents", err)
		diffIDs(t, "unknown calendar", nil, ids(got))
	}},
}

var syncStateCases = []testCase{
	{"PutGet", func(t *testing.T, h *harness) {
		ctx := context.Background()
		_, err := h.s.GetSyncState(ctx, "cal_a")
		wantErr(t, "GetSyncState", err, store.ErrNotFound)

		want := store.SyncState{CalendarID: "cal_a", Watermark: at(time.Second + 123)}
		mustUpdate(t, h.s, func(tx store.Tx) error {
			_, err := tx.GetSyncState(ctx, "cal_a")
			wantErr(t, "Tx.GetSyncState", err, store.ErrNotFound)
			if err := tx.PutSyncState(ctx, want); err != nil {
				return err
			}
			got, err := tx.GetSyncState(ctx, "cal_a")
			must(t, "Tx.GetSyncState", err)
			checkSyncState(t, want, got)
			return nil
		})
		got, err := h.s.GetSyncState(ctx, "cal_a")
		must(t, "GetSyncState", err)
		checkSyncState(t, want, got)

		want.LastFullSync = at(time.Hour)
		want.Watermark = at(2 * time.Hour)
		mustUpdate(t, h.s, func(tx store.Tx) error { return tx.PutSyncState(ctx, want) })
		got, err = h.s.GetSyncState(ctx, "cal_a")
		must(t, "GetSyncState", err)
		checkSyncState(t, want, got)
	}},
}

func checkSyncState(t *testing.T, want, got store.SyncState) {
	t.Helper()
	if got.CalendarID != want.CalendarID || !got.Watermark.Equal(want.Watermark) ||
		!got.LastFullSync.Equal(want.LastFullSync) || got.LastFullSync.IsZero() != want.LastFullSync.IsZero() {
		t.Fatalf("sync state = %+v, want %+v", got, want)
	}
}
