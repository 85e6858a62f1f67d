package recall

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	svix "github.com/svix/svix-webhooks/go"
)

const (
	vectorSecret = "whsec_plJ3nmyCDGBKInavdOK15jsl"
	vectorID     = "msg_loFOjxBNrRLzqYUf"
	vectorTS     = 1731705121
	vectorBody   = `{"event_type":"ping","data":{"success":true}}`
	vectorSig    = "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0="
)

func headers(prefix, id string, ts int64, sig string) http.Header {
	h := http.Header{}
	h.Set(prefix+"-id", id)
	h.Set(prefix+"-timestamp", strconv.FormatInt(ts, 10))
	h.Set(prefix+"-signature", sig)
	return h
}

func mustSign(tb testing.TB, secret, id string, ts time.Time, body string) string {
	tb.Helper()
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		tb.Fatal(err)
	}
	sig, err := wh.Sign(id, ts, []byte(body))
	if err != nil {
		tb.Fatal(err)
	}
	return sig
}

func TestVerifyTestVector(t *testing.T) {
	at := func() time.Time { return time.Unix(vectorTS, 0).Add(time.Minute) }
	v, err := NewVerifier([]string{vectorSecret}, WithVerifierClock(at))
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"svix", "webhook"} {
		t.Run(prefix, func(t *testing.T) {
			id, err := v.Verify([]byte(vectorBody), headers(prefix, vectorID, vectorTS, vectorSig))
			if err != nil || id != vectorID {
				t.Fatalf("Verify = %q, %v", id, err)
			}
		})
	}
	t.Run("ErrTamperedBody", func(t *testing.T) {
		_, err := v.Verify([]byte(vectorBody+" "), headers("svix", vectorID, vectorTS, vectorSig))
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("Verify = %v, want ErrUnauthorized", err)
		}
	})
	t.Run("ErrRealClock", func(t *testing.T) {
		real, _ := NewVerifier([]string{vectorSecret})
		if _, err := real.Verify([]byte(vectorBody), headers("svix", vectorID, vectorTS, vectorSig)); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("a 2024 timestamp verified with the real clock: %v", err)
		}
	})
}

func TestVerify(t *testing.T) {
	old := "whsec_" + base64.StdEncoding.EncodeToString([]byte("old-secret-0123456789abcdef"))
	cur := "whsec_" + base64.StdEncoding.EncodeToString([]byte("new-secret-0123456789abcdef"))
	other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("someone-else-0123456789abc"))
	v, err := NewVerifier([]string{cur, old})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"event":"calendar.sync_events","data":{"calendar_id":"c1","last_updated_ts":"2026-01-20T10:00:00Z"}}`
	now := time.Now()
	tests := []struct {
		name   string
		header http.Header
		body   string
		ok     bool
	}{
		{"OK", headers("svix", "msg_1", now.Unix(), mustSign(t, cur, "msg_1", now, body)), body, true},
		{"OKStandardWebhooks", headers("webhook", "msg_1", now.Unix(), mustSign(t, cur, "msg_1", now, body)), body, true},
		{"OKOldSecret", headers("svix", "msg_1", now.Unix(), mustSign(t, old, "msg_1", now, body)), body, true},
		{"OKSeveralSignatures", headers("svix", "msg_1", now.Unix(),
			"v1,AAAA "+mustSign(t, other, "msg_1", now, body)+" v2,xyz "+mustSign(t, old, "msg_1", now, body)), body, true},
		{"OKFourMinutesOld", headers("svix", "msg_1", now.Add(-4*time.Minute).Unix(), mustSign(t, cur, "msg_1", now.Add(-4*time.Minute), body)), body, true},
		{"ErrOtherSecret", headers("svix", "msg_1", now.Unix(), mustSign(t, other, "msg_1", now, body)), body, false},
		{"ErrOtherID", headers("svix", "msg_2", now.Unix(), mustSign(t, cur, "msg_1", now, body)), body, false},
		{"ErrTooOld", headers("svix", "msg_1", now.Add(-6*time.Minute).Unix(), mustSign(t, cur, "msg_1", now.Add(-6*time.Minute), body)), body, false},
		{"ErrTooNew", headers("svix", "msg_1", now.Add(6*time.Minute).Unix(), mustSign(t, cur, "msg_1", now.Add(6*time.Minute), body)), body, false},
		{"ErrMissingHeaders", http.Header{}, body, false},
		{"ErrBadTimestamp", http.Header{"Svix-Id": {"m"}, "Svix-Timestamp": {"soon"}, "Svix-Signature": {"v1,x"}}, body, false},
		{"ErrNoV1", headers("svix", "msg_1", now.Unix(), "v2,abc"), body, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify([]byte(tt.body), tt.header)
			if tt.ok {
				if err != nil || id != "msg_1" {
					t.Fatalf("Verify = %q, %v", id, err)
				}
				return
			}
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("Verify = %q, %v; want ErrUnauthorized", id, err)
			}
		})
	}
}

func TestNewVerifierErrors(t *testing.T) {
	for _, secrets := range [][]string{nil, {""}, {"plJ3nmyCDGBKInavdOK15jsl"}, {"whsec_"}, {"whsec_!!notbase64"}} {
		if _, err := NewVerifier(secrets); err == nil {
			t.Errorf("NewVerifier(%q) succeeded", secrets)
		}
	}
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte(vectorBody), vectorID, strconv.Itoa(vectorTS), vectorSig)
	f.Add([]byte("{}"), "msg", "0", "v1,")
	f.Add([]byte(""), "", "", "v1,a v1,b")
	v, err := NewVerifier([]string{vectorSecret}, WithVerifierClock(func() time.Time { return time.Unix(vectorTS, 0) }))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, id, ts, sig string) {
		h := http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {ts}, "Webhook-Signature": {sig}}
		got, err := v.Verify(body, h)
		if err != nil {
			if !errors.Is(err, ErrUnauthorized) || got != "" {
				t.Fatalf("Verify = %q, %v", got, err)
			}
			return
		}
		if got != id {
			t.Fatalf("Verify returned id %q, want %q", got, id)
		}
		if string(body) != vectorBody || id != vectorID {
			t.Fatalf("a forged delivery verified: %q %q %q %q", body, id, ts, sig)
		}
	})
}

func TestParseWebhook(t *testing.T) {
	tests := []struct {
		name string
		body string
		want *Webhook
		err  error
	}{
		{"CalendarUpdate", `{"event":"calendar.update","data":{"calendar_id":"c1"}}`, &Webhook{Event: EventCalendarUpdate, CalendarID: "c1"}, nil},
		{"SyncEvents", `{"event":"calendar.sync_events","data":{"calendar_id":"c1","last_updated_ts":"2026-01-20T10:00:00.123+00:00"}}`,
			&Webhook{Event: EventCalendarSyncEvents, CalendarID: "c1", LastUpdatedTS: time.Date(2026, 1, 20, 10, 0, 0, 123e6, time.UTC)}, nil},
		{"SyncEventsNoOffset", `{"event":"calendar.sync_events","data":{"calendar_id":"c1","last_updated_ts":"2026-01-20T10:00:00"}}`,
			&Webhook{Event: EventCalendarSyncEvents, CalendarID: "c1", LastUpdatedTS: time.Date(2026, 1, 20, 10, 0, 0, 0, time.UTC)}, nil},
		{"IgnoredBot", `{"event":"bot.status_change","data":{"bot":{"id":"b"}}}`, nil, ErrIgnored},
		{"IgnoredPing", vectorBody, nil, ErrIgnored},
		{"ErrNotJSON", `<html>`, nil, ErrMalformed},
		{"ErrArray", `[1]`, nil, ErrMalformed},
		{"ErrNoEvent", `{"data":{"calendar_id":"c1"}}`, nil, ErrMalformed},
		{"ErrEventType", `{"event":1}`, nil, ErrMalformed},
		{"ErrNoCalendar", `{"event":"calendar.update","data":{}}`, nil, ErrMalformed},
		{"ErrNoData", `{"event":"calendar.update"}`, nil, ErrMalformed},
		{"ErrBadTimestamp", `{"event":"calendar.sync_events","data":{"calendar_id":"c1","last_updated_ts":"yesterday"}}`, nil, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Parse([]byte(tt.body))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Parse = %v, %v; want %v", w, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if w.Event != tt.want.Event || w.CalendarID != tt.want.CalendarID || !w.LastUpdatedTS.Equal(tt.want.LastUpdatedTS) {
				t.Fatalf("Parse = %+v, want %+v", w, tt.want)
			}
			if w.CalsyncCalendarID() == "" {
				t.Fatal("empty CalsyncCalendarID")
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"event":"calendar.sync_events","data":{"calendar_id":"c1","last_updated_ts":"2026-01-20T10:00:00Z"}}`))
	f.Add([]byte(`{"event":"calendar.update","data":{"calendar_id":"c1"}}`))
	f.Add([]byte(vectorBody))
	f.Add([]byte(`{"event":"bot.done"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		w, err := Parse(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrIgnored) {
				t.Fatalf("Parse error %v is neither ErrMalformed nor ErrIgnored", err)
			}
			return
		}
		if w.CalendarID == "" || (w.Event != EventCalendarUpdate && w.Event != EventCalendarSyncEvents) {
			t.Fatalf("Parse accepted %+v", w)
		}
	})
}
