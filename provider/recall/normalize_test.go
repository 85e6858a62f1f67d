package recall

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/internal/golden"
)

func decodeEvent(tb testing.TB, body []byte) *Event {
	tb.Helper()
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		tb.Fatalf("decode: %v", err)
	}
	return &e
}

func TestNormalizeEventGolden(t *testing.T) {
	for _, in := range golden.Inputs(t) {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".json"), func(t *testing.T) {
			body, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := NormalizeEvent(decodeEvent(t, body))
			if err != nil {
				t.Fatalf("NormalizeEvent: %v", err)
			}
			golden.Assert(t, golden.PathFor(in), ev)
		})
	}
}

func TestNormalizeEventFields(t *testing.T) {
	load := func(name string) *calsyncv1.CalendarEvent {
		t.Helper()
		body, err := os.ReadFile(filepath.Join("testdata", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := NormalizeEvent(decodeEvent(t, body))
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	t.Run("PacificTeams", func(t *testing.T) {
		ev := load("ms_pacific_teams")
		if ev.GetTimeZone() != "America/Los_Angeles" || ev.GetMeetingPlatform() != "microsoft_teams" {
			t.Errorf("zone %q platform %q", ev.GetTimeZone(), ev.GetMeetingPlatform())
		}
		if got := ev.GetStartTime().AsTime(); !got.Equal(time.Date(2026, 1, 21, 17, 0, 0, 0, time.UTC)) {
			t.Errorf("start = %s", got)
		}
		if ev.GetId() != model.EventID("recall", "", "d08d91a2-b4c5-4d06-b1e2-6d7e8f900112") ||
			ev.GetCalendarId() != model.CalendarID("recall", "", "1c7b4d6f-2a3e-4f4d-8b9c-8d7e6f5a4b3c") {
			t.Errorf("ids = %s %s", ev.GetId(), ev.GetCalendarId())
		}
	})
	t.Run("UTCWithoutRecallTimes", func(t *testing.T) {
		ev := load("ms_utc")
		if got := ev.GetStartTime().AsTime(); !got.Equal(time.Date(2026, 1, 22, 15, 0, 0, 0, time.UTC)) {
			t.Errorf("start = %s", got)
		}
		if ev.GetTimeZone() != "Europe/Berlin" || ev.GetMeetingPlatform() != "zoom" {
			t.Errorf("zone %q platform %q", ev.GetTimeZone(), ev.GetMeetingPlatform())
		}
	})
	t.Run("SeriesMaster", func(t *testing.T) {
		ev := load("ms_series_master_weekly")
		want := "RRULE:FREQ=WEEKLY;BYDAY=TU,TH;INTERVAL=2;WKST=MO;UNTIL=20260701T065959Z"
		if len(ev.GetRecurrence()) != 1 || ev.GetRecurrence()[0] != want {
			t.Errorf("recurrence = %q, want %q", ev.GetRecurrence(), want)
		}
	})
	t.Run("Deleted", func(t *testing.T) {
		ev := load("google_deleted")
		if !ev.GetDeleted() || ev.GetTitle() != "Interview" {
			t.Errorf("deleted=%v title=%q", ev.GetDeleted(), ev.GetTitle())
		}
	})
}

func TestRRuleFromGraph(t *testing.T) {
	la, _ := time.LoadLocation("America/Los_Angeles")
	rec := func(pattern, rng string) *graphRecurrence {
		var r graphRecurrence
		if err := json.Unmarshal([]byte(`{"pattern":`+pattern+`,"range":`+rng+`}`), &r); err != nil {
			t.Fatal(err)
		}
		return &r
	}
	noEnd := `{"type":"noEnd","startDate":"2026-01-01"}`
	tests := []struct {
		name, pattern, rng string
		allDay             bool
		want               string
	}{
		{"Daily", `{"type":"daily","interval":1}`, noEnd, false, "RRULE:FREQ=DAILY"},
		{"DailyCount", `{"type":"daily","interval":3}`, `{"type":"numbered","numberOfOccurrences":10}`, false, "RRULE:FREQ=DAILY;INTERVAL=3;COUNT=10"},
		{"Weekly", `{"type":"weekly","interval":1,"daysOfWeek":["monday"],"firstDayOfWeek":"sunday"}`, noEnd, false, "RRULE:FREQ=WEEKLY;BYDAY=MO"},
		{"AbsoluteMonthly", `{"type":"absoluteMonthly","interval":1,"dayOfMonth":15}`, noEnd, false, "RRULE:FREQ=MONTHLY;BYMONTHDAY=15"},
		{"RelativeMonthly", `{"type":"relativeMonthly","interval":1,"daysOfWeek":["friday"],"index":"last"}`, noEnd, false, "RRULE:FREQ=MONTHLY;BYDAY=FR;BYSETPOS=-1"},
		{"AbsoluteYearly", `{"type":"absoluteYearly","interval":1,"month":3,"dayOfMonth":8}`, `{"type":"endDate","endDate":"2030-03-08"}`, true, "RRULE:FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=8;UNTIL=20300308"},
		{"RelativeYearly", `{"type":"relativeYearly","interval":1,"month":11,"daysOfWeek":["thursday"],"index":"fourth"}`, noEnd, false, "RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=TH;BYSETPOS=4"},
		{"UntilTimed", `{"type":"daily","interval":1}`, `{"type":"endDate","endDate":"2026-03-31"}`, false, "RRULE:FREQ=DAILY;UNTIL=20260401T065959Z"},
		{"Unknown", `{"type":"lunar","interval":1}`, noEnd, false, ""},
		{"BadDay", `{"type":"relativeMonthly","daysOfWeek":["funday"]}`, noEnd, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rruleFromGraph(rec(tt.pattern, tt.rng), tt.allDay, la); got != tt.want {
				t.Errorf("rrule = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWindowsZonesLoad(t *testing.T) {
	if len(windowsZones) < 135 {
		t.Errorf("only %d Windows zones", len(windowsZones))
	}
	for win, iana := range windowsZones {
		if _, err := time.LoadLocation(iana); err != nil {
			t.Errorf("%s → %s: %v", win, iana, err)
		}
	}
	for name, want := range map[string]string{
		"Pacific Standard Time": "America/Los_Angeles", "UTC": "UTC", "tzone://Microsoft/Utc": "UTC",
		"Europe/Paris": "Europe/Paris", "Romance Standard Time": "Europe/Paris",
	} {
		if got, _, err := resolveZone(name); err != nil || got != want {
			t.Errorf("resolveZone(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	for _, bad := range []string{"", "Local", "Mars Standard Time", "tzone://Microsoft/Custom"} {
		if _, _, err := resolveZone(bad); err == nil {
			t.Errorf("resolveZone(%q) succeeded", bad)
		}
	}
}

func TestNormalizeEventErrors(t *testing.T) {
	base := `"id":"e1","calendar_id":"c1","platform":"%s"`
	tests := []struct {
		name, platform, raw string
	}{
		{"GoogleEndBeforeStart", PlatformGoogle, `{"start":{"dateTime":"2026-01-21T10:00:00Z"},"end":{"dateTime":"2026-01-21T09:00:00Z"}}`},
		{"GoogleUnknownZone", PlatformGoogle, `{"start":{"dateTime":"2026-01-21T10:00:00Z","timeZone":"Mars/Base"}}`},
		{"GoogleBadDate", PlatformGoogle, `{"start":{"date":"2026-02-30"}}`},
		{"GoogleWrongType", PlatformGoogle, `{"summary":42}`},
		{"MicrosoftUnknownZone", PlatformMicrosoft, `{"start":{"dateTime":"2026-01-21T10:00:00.0000000","timeZone":"Mars Standard Time"}}`},
		{"MicrosoftBadTime", PlatformMicrosoft, `{"start":{"dateTime":"soon","timeZone":"UTC"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{` + strings.Replace(base, "%s", tt.platform, 1) + `,"raw":` + tt.raw + `}`
			_, err := NormalizeEvent(decodeEvent(t, []byte(body)))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("NormalizeEvent = %v, want ErrMalformed", err)
			}
		})
	}
	t.Run("DeletedStillTombstoned", func(t *testing.T) {
		body := `{"id":"e1","calendar_id":"c1","is_deleted":true,"raw":{"start":{"dateTime":"x","timeZone":"Mars/Base"}}}`
		ev, err := NormalizeEvent(decodeEvent(t, []byte(body)))
		if err != nil || !ev.GetDeleted() || ev.GetProviderEventId() != "e1" {
			t.Fatalf("NormalizeEvent = %v, %v", ev, err)
		}
	})
	// An all-day event's instants are the starts of its dates in its zone,
	// which can fall outside what the API carries even when the dates are
	// valid: such an event is refused, not stored without its times.
	for name, raw := range map[string]string{
		"GoogleAllDayBeforeYear1InTokyo": `{"start":{"date":"0001-01-01","timeZone":"Asia/Tokyo"},"end":{"date":"0001-01-02","timeZone":"Asia/Tokyo"}}`,
		"GoogleAllDayLastDay":            `{"start":{"date":"9999-12-31"}}`,
		"MicrosoftAllDayLastDay":         `{"subject":"x","isAllDay":true,"start":{"dateTime":"9999-12-31T00:00:00.0000000","timeZone":"UTC"}}`,
	} {
		t.Run("Err"+name, func(t *testing.T) {
			body := `{"id":"e1","calendar_id":"c1","raw":` + raw + `}`
			ev, err := NormalizeEvent(decodeEvent(t, []byte(body)))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("NormalizeEvent = %v, %v; want ErrMalformed", ev, err)
			}
		})
	}
	t.Run("EarliestInstantIsATime", func(t *testing.T) {
		body := `{"id":"e1","calendar_id":"c1","start_time":"0001-01-01T00:00:00Z","end_time":"0001-01-01T01:00:00Z",
			"created_at":"0001-01-01T00:00:00Z","updated_at":"0001-01-01T00:00:00Z","raw":null}`
		ev, err := NormalizeEvent(decodeEvent(t, []byte(body)))
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
	})
	t.Run("CustomZoneUsesRecallTimes", func(t *testing.T) {
		body := `{"id":"e1","calendar_id":"c1","platform":"microsoft_outlook","start_time":"2026-01-21T10:00:00Z","end_time":"2026-01-21T11:00:00Z",
			"raw":{"subject":"x","start":{"dateTime":"2026-01-21T12:00:00.0000000","timeZone":"tzone://Microsoft/Custom"},"end":{"dateTime":"2026-01-21T13:00:00.0000000","timeZone":"tzone://Microsoft/Custom"}}}`
		ev, err := NormalizeEvent(decodeEvent(t, []byte(body)))
		if err != nil || ev.GetTimeZone() != "" || ev.GetStartTime().AsTime().Hour() != 10 {
			t.Fatalf("NormalizeEvent = %v, %v", ev, err)
		}
	})
}

func FuzzNormalize(f *testing.F) {
	for _, b := range recallInputs(f) {
		f.Add(b)
	}
	f.Add([]byte(`{"id":"e","calendar_id":"c","raw":null}`))
	f.Add([]byte(`{"id":"e","calendar_id":"c","raw":{"start":{"date":"0001-01-01","timeZone":"Asia/Tokyo"}}}`))
	f.Add([]byte(`{"id":"e","calendar_id":"c","platform":"microsoft_outlook","raw":{"isAllDay":true,"start":{"dateTime":"2026-01-01T00:00:00","timeZone":"UTC"}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var e Event
		if json.Unmarshal(body, &e) != nil {
			return
		}
		ev, err := NormalizeEvent(&e)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("NormalizeEvent error %v is not ErrMalformed", err)
			}
			return
		}
		// NormalizeEventJSON gives the same event, its payload as the
		// JSON that decodes to it.
		bare, raw, err := NormalizeEventJSON(&e)
		if err != nil || bare.GetRaw() != nil {
			t.Fatalf("NormalizeEventJSON: %v, %v where NormalizeEvent succeeded", bare, err)
		}
		if raw.IsZero() != (ev.GetRaw() == nil) {
			t.Fatalf("payload JSON %q for payload %v", raw.Bytes(), ev.GetRaw())
		}
		bare.Raw = ev.GetRaw()
		if !proto.Equal(bare, ev) {
			t.Fatalf("NormalizeEventJSON gives %v, NormalizeEvent %v", bare, ev)
		}
		if !raw.IsZero() {
			if got, err := model.StructFromJSON(raw.Bytes()); err != nil || !proto.Equal(got, ev.GetRaw()) {
				t.Fatalf("payload JSON %q decodes to %v, %v; want %v", raw.Bytes(), got, err, ev.GetRaw())
			}
		}
		if ev.GetId() == "" || ev.GetProvider() != model.ProviderRecall {
			t.Fatalf("missing ids: %v", ev)
		}
		if s, en := ev.GetStartTime(), ev.GetEndTime(); !ev.GetDeleted() && s != nil && en != nil && en.AsTime().Before(s.AsTime()) {
			t.Fatalf("end before start: %v", ev)
		}
		if err := model.CheckEncodable(ev); err != nil {
			t.Fatalf("a normalized event the API cannot carry: %v", err)
		}
		golden.Marshal(t, ev)
	})
}
