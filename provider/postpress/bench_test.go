package postpress

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/calsync/calsync/internal/stagebench"
)

// BenchmarkStageVerifyPostpress is the verify stage of a postpress
// webhook: the static header check, hashed and compared in constant time
// against two configured secrets (a rotation in progress), the second one
// matching, plus the dedupe key the receiver derives from the body.
func BenchmarkStageVerifyPostpress(b *testing.B) {
	a, err := NewAuthenticator("Postpress-Auth", []string{"old-secret-being-rotated-out", "current-secret"})
	if err != nil {
		b.Fatal(err)
	}
	body := benchBody(b, "seed_updated.json")
	h := http.Header{"Postpress-Auth": {"current-secret"}, "Content-Type": {"application/json"}}
	cpu := stagebench.Start(b)
	for b.Loop() {
		if err := a.Verify(h); err != nil {
			b.Fatal(err)
		}
		if DedupKey(body) == "" {
			b.Fatal("empty dedupe key")
		}
	}
	cpu.Report(b, b.N, "webhook")
}

// BenchmarkStageNormalizePostpress is the normalize stage of a postpress
// webhook as processing runs it: Parse, then NormalizeJSON, which hands
// the body on as the event's raw payload. Each sub-benchmark is one golden input.
func BenchmarkStageNormalizePostpress(b *testing.B) {
	for _, name := range []string{"seed_updated", "recurring_instance", "zoom_location", "seed_deleted"} {
		b.Run(name, func(b *testing.B) {
			body := benchBody(b, name+".json")
			cpu := stagebench.Start(b)
			for b.Loop() {
				w, err := Parse(body)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := NormalizeJSON(w, body); err != nil {
					b.Fatal(err)
				}
			}
			cpu.Report(b, b.N, "webhook")
		})
	}
}

// BenchmarkStageParsePostpress is the part of normalization the intake
// runs on the request path: Parse alone, for the delivery's event name and
// ordering key.
func BenchmarkStageParsePostpress(b *testing.B) {
	body := benchBody(b, "seed_updated.json")
	cpu := stagebench.Start(b)
	for b.Loop() {
		if _, err := Parse(body); err != nil {
			b.Fatal(err)
		}
	}
	cpu.Report(b, b.N, "webhook")
}

func benchBody(b *testing.B, name string) []byte {
	b.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		b.Fatal(err)
	}
	return body
}
