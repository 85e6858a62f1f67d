package recall

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/calsync/calsync/internal/stagebench"
)

// BenchmarkStageVerifyRecall is the verify stage of a Recall hint: the
// Svix signature (HMAC-SHA256 over id, timestamp and body) checked against
// two configured secrets, the delivery signed by the second (a rotation in
// progress, the costlier case), then the hint parsed for its event name
// and calendar, as the receiver does before committing it.
func BenchmarkStageVerifyRecall(b *testing.B) {
	old := "whsec_" + base64.StdEncoding.EncodeToString([]byte("old-secret-0123456789abcdef"))
	cur := "whsec_" + base64.StdEncoding.EncodeToString([]byte("new-secret-0123456789abcdef"))
	v, err := NewVerifier([]string{old, cur})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"event":"calendar.sync_events","data":{"calendar_id":"5f2b4ad2-5b0f-4d4e-9c53-4c1f0f4d2b61","last_updated_ts":"2026-01-20T10:00:00.123456+00:00"}}`)
	now := time.Now()
	h := headers("webhook", "msg_2mXhJ0dGkPn8HbQvS1", now.Unix(), mustSign(b, cur, "msg_2mXhJ0dGkPn8HbQvS1", now, string(body)))
	h.Set("Content-Type", "application/json")
	cpu := stagebench.Start(b)
	for b.Loop() {
		if _, err := v.Verify(body, h); err != nil {
			b.Fatal(err)
		}
		if _, err := Parse(body); err != nil {
			b.Fatal(err)
		}
	}
	cpu.Report(b, b.N, "webhook")
}

// BenchmarkStageNormalizeRecall is the normalize stage of a Recall event
// as processing runs it on each event of a fetched page: decode Recall's
// event with the JSON package the client decodes pages with (the event
// keeps the whole document as the raw payload), then
// NormalizeEventJSON, which decodes the raw Google Calendar or Microsoft
// Graph event inside it and checks the document, kept as the payload. Each sub-benchmark is one golden input.
func BenchmarkStageNormalizeRecall(b *testing.B) {
	for _, name := range []string{"google_timed_meet", "google_recurring_instance", "ms_pacific_teams", "ms_series_master_weekly"} {
		b.Run(name, func(b *testing.B) {
			body, err := os.ReadFile(filepath.Join("testdata", name+".json"))
			if err != nil {
				b.Fatal(err)
			}
			cpu := stagebench.Start(b)
			for b.Loop() {
				var e Event
				if err := json.Unmarshal(body, &e); err != nil {
					b.Fatal(err)
				}
				if _, _, err := NormalizeEventJSON(&e); err != nil {
					b.Fatal(err)
				}
			}
			cpu.Report(b, b.N, "event")
		})
	}
}
