package storetest

import (
	"context"
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// The earliest and latest instants the model (google.protobuf.Timestamp)
// holds. Both lie far outside what a count of unix nanoseconds in an int64
// can hold (1677 to 2262).
var (
	earliest = time.Date(1, time.January, 1, 0, 0, 0, 0, time.UTC)
	latest   = time.Date(9999, time.December, 31, 23, 59, 59, 999_999_999, time.UTC)
)

// extremeCases check that every instant the model accepts is stored, ordered,
// filtered and paged exactly, and that what no API encoding could carry is
// refused before it is stored.
var extremeCases = []testCase{
	{"OrderAcrossTheWholeRange", func(t *testing.T, h *harness) {
		ctx := context.Background()
		want := extremeEvents(t, h)
		got, err := h.s.ListEvents(ctx, store.EventQuery{})
		must(t, "ListEvents", err)
		diffIDs(t, "order", want, ids(got))
		for _, e := range got {
			back, err := h.s.GetEvent(ctx, e.GetId(), false)
			must(t, "GetEvent", err)
			diffProto(t, "event "+e.GetId(), e, back)
		}
		// The earliest instant is a start like any other, not "no start".
		first, err := h.s.GetEvent(ctx, "evt_z_earliest", false)
		must(t, "GetEvent", err)
		if first.GetStartTime() == nil || !first.GetStartTime().AsTime().Equal(earliest) {
			t.Fatalf("start of the earliest event = %v, want %s", first.GetStartTime(), earliest)
		}
	}},
	{"RangeFiltersInYearsOneAndNineThousand", func(t *testing.T, h *harness) {
		ctx := context.Background()
		extremeEvents(t, h)
		list := func(q store.EventQuery) []string {
			t.Helper()
			got, err := h.s.ListEvents(ctx, q)
			must(t, "ListEvents", err)
			return ids(got)
		}
		y9999 := time.Date(9999, time.January, 1, 0, 0, 0, 0, time.UTC)
		diffIDs(t, "year 9999", []string{"evt_d_9000", "evt_b_9999", "evt_c_9999"},
			list(store.EventQuery{Start: y9999, End: latest.Add(-time.Nanosecond)}))
		// One nanosecond apart at the far end still tells two events apart.
		diffIDs(t, "the last nanosecond", []string{"evt_a_latest"},
			list(store.EventQuery{Start: latest.Add(-time.Nanosecond)}))
		diffIDs(t, "from 9000 to the last instant", []string{"evt_d_9000", "evt_b_9999", "evt_c_9999"},
			list(store.EventQuery{Start: time.Date(9000, 1, 1, 0, 0, 0, 0, time.UTC), End: latest}))
		diffIDs(t, "year 1", []string{"evt_z_earliest", "evt_y_year1"},
			list(store.EventQuery{Start: earliest.Add(time.Nanosecond), End: time.Date(2, 1, 1, 0, 0, 0, 0, time.UTC)}))
		diffIDs(t, "before 1677", []string{"evt_z_earliest", "evt_y_year1", "evt_x_1600"},
			list(store.EventQuery{End: time.Date(1677, 1, 1, 0, 0, 0, 0, time.UTC)}))
		diffIDs(t, "after 2262", []string{"evt_e_2300", "evt_d_9000", "evt_b_9999", "evt_c_9999", "evt_a_latest"},
			list(store.EventQuery{Start: time.Date(2263, 1, 1, 0, 0, 0, 0, time.UTC)}))
	}},
	{"KeysetPagingAcrossTheWholeRange", func(t *testing.T, h *harness) {
		ctx := context.Background()
		want := extremeEvents(t, h)
		for _, size := range []int{1, 2, 3} {
			var got []string
			q := store.EventQuery{Limit: size}
			for pages := 0; ; pages++ {
				if pages > len(want) {
					t.Fatalf("paging with limit %d does not end: %v", size, got)
				}
				page, err := h.s.ListEvents(ctx, q)
				must(t, "ListEvents", err)
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
	{"UnencodableRefused", func(t *testing.T, h *harness) {
		ctx := context.Background()
		good := event("evt_ok", "cal_a", at(0), at(time.Hour))
		badEvents := map[string]func(e *calsyncv1.CalendarEvent){
			"end after year 9999": func(e *calsyncv1.CalendarEvent) {
				e.EndTime = &timestamppb.Timestamp{Seconds: latest.Unix() + 1}
			},
			"start before year 1": func(e *calsyncv1.CalendarEvent) {
				e.StartTime = &timestamppb.Timestamp{Seconds: earliest.Unix() - 1}
			},
			"nanos out of range": func(e *calsyncv1.CalendarEvent) {
				e.ProviderUpdateTime = &timestamppb.Timestamp{Seconds: 1, Nanos: 1_000_000_000}
			},
			"title not UTF-8": func(e *calsyncv1.CalendarEvent) { e.Title = "caf\xe9" },
			"attendee not UTF-8": func(e *calsyncv1.CalendarEvent) {
				e.Attendees = append(e.Attendees, &calsyncv1.Attendee{Email: "\xff@example.com"})
			},
			"raw number NaN": func(e *calsyncv1.CalendarEvent) {
				e.Raw = &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(math.NaN())}}
			},
			"raw key not UTF-8": func(e *calsyncv1.CalendarEvent) {
				e.Raw = &structpb.Struct{Fields: map[string]*structpb.Value{"\xc3": structpb.NewNullValue()}}
			},
		}
		for name, spoil := range badEvents {
			e := event("evt_bad", "cal_a", at(0), at(time.Hour))
			spoil(e)
			err := h.s.Update(ctx, func(tx store.Tx) error { return tx.PutEvent(ctx, e) })
			wantErr(t, "PutEvent with "+name, err, store.ErrInvalidArgument)
			if e.GetRaw() != nil {
				continue // the change log leaves raw payloads out
			}
			err = h.s.Update(ctx, func(tx store.Tx) error {
				_, err := tx.AppendChange(ctx, &calsyncv1.Change{
					Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED, Event: good, PreviousEvent: e,
				})
				return err
			})
			wantErr(t, "AppendChange with a previous event with "+name, err, store.ErrInvalidArgument)
		}
		c := calendar("cal_bad", "recall", "r1")
		c.ProviderUpdateTime = &timestamppb.Timestamp{Seconds: latest.Unix() + 86400}
		err := h.s.Update(ctx, func(tx store.Tx) error { return tx.PutCalendar(ctx, c) })
		wantErr(t, "PutCalendar with a time after year 9999", err, store.ErrInvalidArgument)

		_, err = h.s.GetEvent(ctx, "evt_bad", false)
		wantErr(t, "GetEvent of a refused event", err, store.ErrNotFound)
		b, err := h.s.ChangeBounds(ctx)
		must(t, "ChangeBounds", err)
		if b.Head != 0 {
			t.Fatalf("a refused change was appended: head %d", b.Head)
		}
	}},
}

// extremeEvents stores events spread over the whole range of the model,
// out of order, and returns their ids in (start_time, id) order.
func extremeEvents(t *testing.T, h *harness) []string {
	t.Helper()
	y9999 := time.Date(9999, time.December, 31, 0, 0, 0, 0, time.UTC)
	evs := []*calsyncv1.CalendarEvent{
		event("evt_a_latest", "cal_a", latest, latest),
		event("evt_z_earliest", "cal_a", earliest, earliest.Add(time.Hour)),
		event("evt_c_9999", "cal_a", y9999, y9999.Add(23*time.Hour)),
		event("evt_y_year1", "cal_b", earliest.Add(time.Nanosecond), earliest.Add(24*time.Hour)),
		event("evt_e_2300", "cal_a", time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2300, 1, 2, 0, 0, 0, 0, time.UTC)),
		event("evt_b_9999", "cal_b", y9999, y9999.Add(time.Hour)),
		event("evt_x_1600", "cal_b", time.Date(1600, 6, 1, 0, 0, 0, 0, time.UTC), time.Date(1600, 6, 2, 0, 0, 0, 0, time.UTC)),
		event("evt_m_now", "cal_b", at(0), at(time.Hour)),
		event("evt_n_before_epoch", "cal_a", time.Date(1969, 12, 31, 23, 59, 59, 999_999_999, time.UTC), time.Unix(0, 0)),
		event("evt_d_9000", "cal_b", time.Date(9000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 12, 0, 0, 0, time.UTC)),
	}
	msgs := make([]any, len(evs))
	for i, e := range evs {
		msgs[i] = e
	}
	mustPut(t, h.s, msgs...)
	// The ids sort against time, so an order that loses the instants
	// (ties broken by id) shows.
	return []string{
		"evt_z_earliest", "evt_y_year1", "evt_x_1600", "evt_n_before_epoch", "evt_m_now",
		"evt_e_2300", "evt_d_9000", "evt_b_9999", "evt_c_9999", "evt_a_latest",
	}
}
