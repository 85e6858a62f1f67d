package postpress

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/internal/golden"
)

func TestAuthenticator(t *testing.T) {
	a, err := NewAuthenticator("x-calsync-token", []string{"old-secret", "new-secret-that-is-longer"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		header  http.Header
		wantErr bool
	}{
		{"OK", http.Header{"X-Calsync-Token": {"old-secret"}}, false},
		{"OKSecondSecret", http.Header{"X-Calsync-Token": {"new-secret-that-is-longer"}}, false},
		{"ErrMissing", http.Header{}, true},
		{"ErrEmpty", http.Header{"X-Calsync-Token": {""}}, true},
		{"ErrWrong", http.Header{"X-Calsync-Token": {"old-secreT"}}, true},
		{"ErrPrefix", http.Header{"X-Calsync-Token": {"old-secret-plus"}}, true},
		{"ErrOtherHeader", http.Header{"Authorization": {"old-secret"}}, true},
		{"ErrRepeated", http.Header{"X-Calsync-Token": {"wrong", "old-secret"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.Verify(tt.header)
			if tt.wantErr != (err != nil) {
				t.Fatalf("Verify = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("Verify = %v, want ErrUnauthorized", err)
			}
		})
	}
	for _, bad := range []struct {
		header  string
		secrets []string
	}{{"", []string{"s"}}, {"X-A", nil}, {"X-A", []string{"s", ""}}} {
		if _, err := NewAuthenticator(bad.header, bad.secrets); err == nil {
			t.Errorf("NewAuthenticator(%q, %q) succeeded", bad.header, bad.secrets)
		}
	}
}

func TestDedupKey(t *testing.T) {
	got := DedupKey([]byte("abc"))
	const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got != want {
		t.Fatalf("DedupKey = %s, want %s", got, want)
	}
}

func TestNormalizeGolden(t *testing.T) {
	for _, in := range golden.Inputs(t) {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".json"), func(t *testing.T) {
			body, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			w, err := Parse(body)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			ev, err := Normalize(w, body)
			if err != nil {
				t.Fatalf("Normalize: %v", err)
			}
			golden.Assert(t, golden.PathFor(in), ev)
		})
	}
}

func TestNormalizeSeed(t *testing.T) {
	body := mustRead(t, "testdata/seed_updated.json")
	w, err := Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := Normalize(w, body)
	if err != nil {
		t.Fatal(err)
	}
	wantID := model.EventID(model.ProviderPostpress, "a4qFy0liRAGo-oZ2YFpirQ/xxxxxxxxxxx@gmail.com", "5m8lnvb64dt2uuaq99k4685eeq")
	if ev.GetId() != wantID || ev.GetCalendarId() != w.CalendarID() {
		t.Errorf("ids = %s %s", ev.GetId(), ev.GetCalendarId())
	}
	if got := ev.GetStartTime().AsTime().UTC().Format("15:04"); got != "13:30" {
		t.Errorf("start = %s UTC, want 13:30", got)
	}
	if ev.GetTimeZone() != "Europe/Paris" || ev.GetStatus() != calsyncv1.EventStatus_EVENT_STATUS_CONFIRMED {
		t.Errorf("zone/status = %s %s", ev.GetTimeZone(), ev.GetStatus())
	}

	del := mustRead(t, "testdata/seed_deleted.json")
	dw, err := Parse(del)
	if err != nil {
		t.Fatal(err)
	}
	if !dw.Deleted() {
		t.Fatal("Deleted() = false")
	}
	tomb, err := Normalize(dw, del)
	if err != nil {
		t.Fatal(err)
	}
	want := &calsyncv1.CalendarEvent{
		Id: wantID, CalendarId: w.CalendarID(), Provider: "postpress",
		ProviderEventId: "5m8lnvb64dt2uuaq99k4685eeq", ProviderCalendarId: "xxxxxxxxxxx@gmail.com", Deleted: true,
	}
	if !proto.Equal(tomb, want) {
		t.Errorf("tombstone = %v, want %v", tomb, want)
	}
}

func TestCalendarFor(t *testing.T) {
	w := &Webhook{AccountID: "acc", ProviderCalendarID: "owner@example.com"}
	c := CalendarFor(w)
	want := &calsyncv1.Calendar{
		Id: model.CalendarID("postpress", "acc", "owner@example.com"), Provider: "postpress",
		ProviderCalendarId: "owner@example.com", AccountId: "acc", Email: "owner@example.com",
	}
	if !proto.Equal(c, want) {
		t.Errorf("CalendarFor = %v, want %v", c, want)
	}
	if c := CalendarFor(&Webhook{AccountID: "acc", ProviderCalendarID: "team calendar"}); c.GetEmail() != "" {
		t.Errorf("email = %q for a non-address id", c.GetEmail())
	}
}

func TestParseErrors(t *testing.T) {
	const ok = `"account_id":"a","calendar_id":"c","id":"e"`
	tests := []struct {
		name string
		body string
		want error
	}{
		{"ErrNotJSON", `not json`, ErrMalformed},
		{"ErrArray", `[]`, ErrMalformed},
		{"ErrNull", `null`, ErrMalformed},
		{"ErrEventNotString", `{"event": 3}`, ErrMalformed},
		{"ErrMissingEvent", `{` + ok + `}`, ErrMalformed},
		{"ErrMissingAccount", `{"event":"calendar_event_created","calendar_id":"c","id":"e"}`, ErrMalformed},
		{"ErrMissingCalendar", `{"event":"calendar_event_deleted","account_id":"a","id":"e"}`, ErrMalformed},
		{"ErrMissingID", `{"event":"calendar_event_updated","account_id":"a","calendar_id":"c"}`, ErrMalformed},
		{"ErrWrongType", `{"event":"calendar_event_created",` + ok + `,"is_all_day":"yes"}`, ErrMalformed},
		{"ErrBadZone", `{"event":"calendar_event_created",` + ok + `,"start":{"date_time":"2026-01-20T14:30:00+01:00","time_zone":"Mars/Olympus"}}`, ErrMalformed},
		{"ErrLocalZone", `{"event":"calendar_event_created",` + ok + `,"start":{"date_time":"2026-01-20T14:30:00+01:00","time_zone":"Local"}}`, ErrMalformed},
		{"ErrBadDateTime", `{"event":"calendar_event_created",` + ok + `,"start":{"date_time":"tomorrow","time_zone":"Europe/Paris"}}`, ErrMalformed},
		{"ErrNoOffsetNoZone", `{"event":"calendar_event_created",` + ok + `,"start":{"date_time":"2026-01-20T14:30:00"}}`, ErrMalformed},
		{"ErrEndBeforeStart", `{"event":"calendar_event_created",` + ok + `,"start":{"date_time":"2026-01-20T14:30:00+01:00"},"end":{"date_time":"2026-01-20T13:30:00+01:00"}}`, ErrMalformed},
		{"ErrBadUpdatedAt", `{"event":"calendar_event_updated",` + ok + `,"updated_at":"yesterday"}`, ErrMalformed},
		{"ErrYearZero", `{"event":"calendar_event_updated",` + ok + `,"start":{"date_time":"0000-01-01T00:00:00+01:00"}}`, ErrMalformed},
		// An all-day event's instants move to the starts of its dates: the
		// end of 9999-12-31 is in year 10000, and midnight of 0001-01-01 in
		// Tokyo is still in year 0 in UTC. Neither fits a Timestamp.
		{"ErrAllDayEndsAfterYear9999", `{"event":"calendar_event_created",` + ok + `,"is_all_day":true,"start":{"date_time":"9999-12-31T00:00:00Z"}}`, ErrMalformed},
		{"ErrAllDayStartsBeforeYear1", `{"event":"calendar_event_created",` + ok + `,"is_all_day":true,"start":{"date_time":"0001-01-01T12:00:00Z","time_zone":"Asia/Tokyo"}}`, ErrMalformed},
		{"IgnoredUnknownEvent", `{"event":"calendar_event_moved",` + ok + `}`, ErrIgnored},
		{"IgnoredAccountStatus", `{"event":"account_status","account_id":"a","status":"sync_success"}`, ErrIgnored},
		{"IgnoredAccountStatusNoEvent", `{"source":"account_status","account_id":"a","status":"stopped"}`, ErrIgnored},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Parse([]byte(tt.body))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, %v; want %v", w, err, tt.want)
			}
		})
	}
}

func TestParseLenient(t *testing.T) {
	body := []byte(`{"event":"calendar_event_created","account_id":"a","calendar_id":"c","id":"e",
		"attendees":["x@example.com",null,{"emailAddress":{"address":"y@example.com","name":"Y"},"status":{"response":"accepted"}}],
		"start":{"date_time":"2026-01-20","time_zone":"Asia/Tokyo"},"end":{"date_time":"2026-01-20T23:59:59+09:00","time_zone":"Asia/Tokyo"},
		"is_all_day":true,"recurrence":null,"created_at":""}`)
	w, err := Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := Normalize(w, body)
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetStartDate() != "2026-01-20" || ev.GetEndDate() != "2026-01-21" || !ev.GetAllDay() {
		t.Errorf("dates = %s..%s all_day=%v", ev.GetStartDate(), ev.GetEndDate(), ev.GetAllDay())
	}
	if got := ev.GetStartTime().AsTime().UTC().Format("2006-01-02T15:04"); got != "2026-01-19T15:00" {
		t.Errorf("start = %s", got)
	}
	if n := len(ev.GetAttendees()); n != 2 {
		t.Fatalf("attendees = %d, want 2", n)
	}
	if a := ev.GetAttendees()[1]; a.GetEmail() != "y@example.com" || a.GetResponseStatus() != calsyncv1.ResponseStatus_RESPONSE_STATUS_ACCEPTED {
		t.Errorf("attendee = %v", a)
	}
}

// TestEarliestInstant checks that 0001-01-01T00:00:00Z, which is also Go's
// zero time, is a start and a provider time like any other, not "none".
func TestEarliestInstant(t *testing.T) {
	body := []byte(`{"event":"calendar_event_created","account_id":"a","calendar_id":"c","id":"e",
		"start":{"date_time":"0001-01-01T00:00:00Z"},"end":{"date_time":"0001-01-01T01:00:00Z"},
		"created_at":"0001-01-01T00:00:00Z","updated_at":"0001-01-01T00:00:00Z"}`)
	w, err := Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := Normalize(w, body)
	if err != nil {
		t.Fatal(err)
	}
	earliest := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, ts := range map[string]*timestamppb.Timestamp{
		"start_time": ev.GetStartTime(), "provider_create_time": ev.GetProviderCreateTime(),
		"provider_update_time": ev.GetProviderUpdateTime(),
	} {
		if ts == nil || !ts.AsTime().Equal(earliest) {
			t.Errorf("%s = %v, want %s", name, ts, earliest)
		}
	}
	if ev.GetEndTime() == nil || !ev.GetEndTime().AsTime().Equal(earliest.Add(time.Hour)) {
		t.Errorf("end_time = %v", ev.GetEndTime())
	}
}

func FuzzParse(f *testing.F) {
	inputs, _ := filepath.Glob("testdata/*.json")
	for _, in := range inputs {
		if !strings.HasSuffix(in, ".golden.json") {
			f.Add(mustRead(f, in))
		}
	}
	f.Add([]byte(`{"event":"calendar_event_created","account_id":"a","calendar_id":"c","id":"e","is_all_day":true,"start":{"date_time":"2026-01-20","time_zone":"UTC"}}`))
	f.Add([]byte(`{"event":"account_status"}`))
	f.Add([]byte(`{"event":"calendar_event_created","account_id":"a","calendar_id":"c","id":"e","is_all_day":true,"start":{"date_time":"9999-12-31T00:00:00Z"}}`))
	f.Add([]byte(`{"event":"calendar_event_created","account_id":"a","calendar_id":"c","id":"e","is_all_day":true,"start":{"date_time":"0001-01-01T12:00:00Z","time_zone":"Asia/Tokyo"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		w, err := Parse(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrIgnored) {
				t.Fatalf("Parse error %v is neither ErrMalformed nor ErrIgnored", err)
			}
			return
		}
		ev, err := Normalize(w, body)
		if err != nil {
			t.Fatalf("Normalize after a successful Parse: %v", err)
		}
		if ev.GetId() == "" || ev.GetCalendarId() != w.CalendarID() {
			t.Fatalf("missing ids: %v", ev)
		}
		if s, e := ev.GetStartTime(), ev.GetEndTime(); s != nil && e != nil && e.AsTime().Before(s.AsTime()) {
			t.Fatalf("end before start: %v", ev)
		}
		if err := model.CheckEncodable(ev); err != nil {
			t.Fatalf("a normalized event the API cannot carry: %v", err)
		}
		golden.Marshal(t, ev) // Every normalized event must be representable as JSON.
	})
}

func mustRead(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
