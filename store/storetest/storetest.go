// Package storetest is the conformance suite every [store.Store] backend
// must pass. A backend's tests call [Run] with a function that opens the
// backend on a real database; the suite never uses mocks, so what it checks
// is what production gets.
package storetest

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// OpenFunc opens the store kept at path, creating it if it does not exist.
// Opening a path again after the store there was closed must give back the
// same data and the same ID, as a restart of the process would. The store
// must dedupe deliveries within [DedupeWindow]. The suite
// gives every case its own path in a temporary directory and closes every
// store it opens; a backend without files may use path as a key.
type OpenFunc func(t *testing.T, path string) store.Store

// Run runs the whole suite against the backend open opens.
func Run(t *testing.T, open OpenFunc) {
	t.Helper()
	groups := []struct {
		name  string
		cases []testCase
	}{
		{"Calendars", calendarCases},
		{"Events", eventCases},
		{"SyncState", syncStateCases},
		{"Update", updateCases},
		{"ChangeLog", changeLogCases},
		{"Snapshot", snapshotCases},
		{"SnapshotBounds", snapshotBoundsCases},
		{"Extremes", extremeCases},
		{"Inbox", inboxCases},
		{"InboxBounds", inboxBoundsCases},
		{"Apply", applyCases},
		{"Lifecycle", lifecycleCases},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, c := range g.cases {
				t.Run(c.name, func(t *testing.T) {
					c.run(t, newHarness(t, open))
				})
			}
		})
	}
}

// testCase is one named conformance check.
type testCase struct {
	name string
	run  func(t *testing.T, h *harness)
}

// harness owns the store of one test case and can restart it.
type harness struct {
	t    *testing.T
	open OpenFunc
	path string
	s    store.Store
}

func newHarness(t *testing.T, open OpenFunc) *harness {
	t.Helper()
	h := &harness{t: t, open: open, path: filepath.Join(t.TempDir(), "calsync.db")}
	h.s = h.openStore()
	return h
}

// openStore opens the case's store and closes it when the test ends.
func (h *harness) openStore() store.Store {
	h.t.Helper()
	s := h.open(h.t, h.path)
	if s == nil {
		h.t.Fatal("open returned a nil store")
	}
	h.t.Cleanup(func() { s.Close() })
	return s
}

// reopen closes the store and opens it again from the same path, as a
// restart would.
func (h *harness) reopen() store.Store {
	h.t.Helper()
	if err := h.s.Close(); err != nil {
		h.t.Fatalf("Close: %v", err)
	}
	h.s = h.openStore()
	return h.s
}

// t0 is the suite's reference instant: a Monday morning, far from any
// boundary of the representations backends use.
var t0 = time.Date(2031, time.March, 3, 9, 0, 0, 0, time.UTC)

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// at returns t0 plus d.
func at(d time.Duration) time.Time { return t0.Add(d) }

func calendar(id, provider, providerCalendarID string) *calsyncv1.Calendar {
	return &calsyncv1.Calendar{
		Id:                 id,
		Provider:           provider,
		ProviderCalendarId: providerCalendarID,
		Platform:           "google_calendar",
		Email:              providerCalendarID + "@example.com",
		Status:             calsyncv1.CalendarStatus_CALENDAR_STATUS_CONNECTED,
		CreateTime:         ts(t0),
		UpdateTime:         ts(t0),
	}
}

// event returns an event of calendarID from start to end.
func event(id, calendarID string, start, end time.Time) *calsyncv1.CalendarEvent {
	return &calsyncv1.CalendarEvent{
		Id:              id,
		CalendarId:      calendarID,
		Provider:        "recall",
		ProviderEventId: "p-" + id,
		Title:           "Meeting " + id,
		StartTime:       ts(start),
		EndTime:         ts(end),
		TimeZone:        "Europe/Paris",
		Status:          calsyncv1.EventStatus_EVENT_STATUS_CONFIRMED,
		Organizer:       &calsyncv1.Person{Email: "boss@example.com"},
		Attendees: []*calsyncv1.Attendee{
			{Email: "a@example.com", ResponseStatus: calsyncv1.ResponseStatus_RESPONSE_STATUS_ACCEPTED},
			{Email: "b@example.com", ResponseStatus: calsyncv1.ResponseStatus_RESPONSE_STATUS_NEEDS_ACTION},
		},
		MeetingUrl:      "https://meet.google.com/abc-defg-hij",
		MeetingPlatform: "google_meet",
		CreateTime:      ts(t0),
		UpdateTime:      ts(t0),
	}
}

// withRaw sets a raw payload on e and returns e.
func withRaw(t *testing.T, e *calsyncv1.CalendarEvent) *calsyncv1.CalendarEvent {
	t.Helper()
	raw, err := structpb.NewStruct(map[string]any{
		"id":      e.GetProviderEventId(),
		"summary": e.GetTitle(),
		"nested":  map[string]any{"list": []any{1.0, "two", true, nil}},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Raw = raw
	return e
}

func created(e *calsyncv1.CalendarEvent) *calsyncv1.Change {
	return &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: e}
}

// mustUpdate runs fn in an Update and fails the test if it fails.
func mustUpdate(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// mustPut stores calendars and events in one transaction.
func mustPut(t *testing.T, s store.Store, msgs ...any) {
	t.Helper()
	ctx := context.Background()
	mustUpdate(t, s, func(tx store.Tx) error {
		for _, m := range msgs {
			var err error
			switch m := m.(type) {
			case *calsyncv1.Calendar:
				err = tx.PutCalendar(ctx, m)
			case *calsyncv1.CalendarEvent:
				err = tx.PutEvent(ctx, m)
			default:
				t.Fatalf("mustPut: unexpected %T", m)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// mustAppend commits one transaction appending changes and returns their
// cursors.
func mustAppend(t *testing.T, s store.Store, changes ...*calsyncv1.Change) []store.Cursor {
	t.Helper()
	ctx := context.Background()
	var cursors []store.Cursor
	mustUpdate(t, s, func(tx store.Tx) error {
		cursors = nil
		for _, c := range changes {
			cur, err := tx.AppendChange(ctx, c)
			if err != nil {
				return err
			}
			cursors = append(cursors, cur)
		}
		return nil
	})
	return cursors
}

// mustReadAll reads every change after the cursor after.
func mustReadAll(t *testing.T, s store.Store, after store.Cursor) []store.ChangeRecord {
	t.Helper()
	var all []store.ChangeRecord
	for {
		page, err := s.ReadChanges(context.Background(), after, 100)
		if err != nil {
			t.Fatalf("ReadChanges(%d): %v", after, err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].Cursor
	}
}

// wantErr fails the test unless err wraps target.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

// must fails the test on err.
func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// diffProto compares protos (or slices of them) and fails on a difference.
func diffProto(t *testing.T, what string, want, got any) {
	t.Helper()
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Fatalf("%s mismatch (-want +got):\n%s", what, d)
	}
}

// ids returns the ids of events, in order.
func ids(events []*calsyncv1.CalendarEvent) []string {
	out := make([]string, 0, len(events))
	for _, e := range events {
		out = append(out, e.GetId())
	}
	return out
}

// diffIDs fails unless got lists exactly want, in order.
func diffIDs(t *testing.T, what string, want, got []string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if got == nil {
		got = []string{}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("%s mismatch (-want +got):\n%s", what, d)
	}
}
