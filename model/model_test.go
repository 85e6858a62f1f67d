package model

import (
	"crypto/sha256"
	"encoding/base32"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

func TestIDs(t *testing.T) {
	a := CalendarID(ProviderRecall, "", "8a1d7c2e")
	if a != CalendarID(ProviderRecall, "", "8a1d7c2e") {
		t.Error("calendar ids are not stable")
	}
	if !ValidID("cal_", a) || ValidID("evt_", a) {
		t.Errorf("ValidID on %q", a)
	}
	// The parts are separated: ("ab","c") and ("a","bc") differ.
	if EventID(ProviderPostpress, "ab", "c") == EventID(ProviderPostpress, "a", "bc") {
		t.Error("ids of different identities collide")
	}
	if EventID(ProviderRecall, "", "x") == EventID(ProviderPostpress, "", "x") {
		t.Error("providers share an id space")
	}
	for _, bad := range []string{"", "cal_", "cal_short", "cal_AAAAAAAAAAAAAAAAAAAAAAAA", "evt_" + a[4:]} {
		if ValidID("cal_", bad) {
			t.Errorf("ValidID(cal_, %q) = true", bad)
		}
	}
}

func TestChangedFields(t *testing.T) {
	ts := func(m int) *timestamppb.Timestamp { return timestamppb.New(time.Unix(int64(m)*60, 0)) }
	prev := &calsyncv1.CalendarEvent{Id: "e", Title: "a", Attendees: []*calsyncv1.Attendee{{Email: "x@example.com"}},
		UpdateTime: ts(1), ProviderUpdateTime: ts(1)}
	same := &calsyncv1.CalendarEvent{Id: "e", Title: "a", Attendees: []*calsyncv1.Attendee{{Email: "x@example.com"}},
		UpdateTime: ts(2), ProviderUpdateTime: ts(2), Raw: nil}
	if got := ChangedFields(prev, same); len(got) != 0 {
		t.Errorf("bookkeeping-only difference reported as %v", got)
	}
	next := &calsyncv1.CalendarEvent{Id: "e", Title: "b", Attendees: []*calsyncv1.Attendee{{Email: "y@example.com"}}, Deleted: true}
	if got, want := ChangedFields(prev, next), []string{"title", "attendees", "deleted"}; !slices.Equal(got, want) {
		t.Errorf("ChangedFields = %v, want %v", got, want)
	}
}

func TestEventIsNewer(t *testing.T) {
	at := func(m int) *calsyncv1.CalendarEvent {
		return &calsyncv1.CalendarEvent{ProviderUpdateTime: timestamppb.New(time.Unix(int64(m)*60, 0))}
	}
	cases := []struct {
		prev, next *calsyncv1.CalendarEvent
		want       bool
	}{
		{at(1), at(2), true},
		{at(2), at(1), false},
		{at(1), at(1), true}, // same version again: harmless, and a no-op downstream
		{&calsyncv1.CalendarEvent{}, at(1), true},
		{at(1), &calsyncv1.CalendarEvent{}, true},
	}
	for i, c := range cases {
		if got := EventIsNewer(c.prev, c.next); got != c.want {
			t.Errorf("case %d: EventIsNewer = %v, want %v", i, got, c.want)
		}
	}
}

// Ids are the first 120 bits of the SHA-256 of their parts, each followed
// by a NUL, in lower-case unpadded base32 after the prefix; the ids already
// stored depend on it not changing. Deriving one costs one allocation.
func TestDerivedIDs(t *testing.T) {
	reference := func(prefix string, parts ...string) string {
		h := sha256.New()
		for _, p := range parts {
			h.Write([]byte(p))
			h.Write([]byte{0})
		}
		return prefix + strings.TrimRight(strings.ToLower(base32.StdEncoding.EncodeToString(h.Sum(nil)[:15])), "=")
	}
	long := strings.Repeat("x", 300)
	for _, parts := range [][]string{{"recall", "", "8a1d7c2e"}, {"postpress", "acct", "owner@example.com"}, {long, long}, {""}} {
		if got, want := derive("cal_", parts...), reference("cal_", parts...); got != want {
			t.Errorf("derive(cal_, %.20q): %s, want %s", parts, got, want)
		}
	}
	if got, want := CalendarID(ProviderRecall, "", "8a1d7c2e"), "cal_"; !strings.HasPrefix(got, want) || len(got) != len(want)+24 {
		t.Errorf("CalendarID: %q, want cal_ and 24 characters", got)
	}
	allocs := testing.AllocsPerRun(100, func() {
		_ = EventID(ProviderPostpress, "acct/owner@example.com", "evt_123456")
	})
	if allocs > 1 {
		t.Errorf("EventID: %.0f allocations, want 1", allocs)
	}
}
