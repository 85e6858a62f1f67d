package recall

import (
	stdjson "encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/segmentio/encoding/json"
)

// The package decodes Recall's answers with github.com/segmentio/encoding/json
// instead of the standard library, for speed only: every value it decodes
// must come out as the standard library would decode it, and every input
// one refuses the other must refuse too.

// decodeTargets are the types decoded from Recall's answers, each as a
// fresh value to decode into.
var decodeTargets = map[string]func() any{
	"Event":    func() any { return new(Event) },
	"Calendar": func() any { return new(Calendar) },
	"page": func() any {
		return new(struct {
			Next    *string `json:"next"`
			Results []Event `json:"results"`
		})
	},
	"googleEvent": func() any { return new(googleEvent) },
	"graphEvent":  func() any { return new(graphEvent) },
}

func checkDecodesAsStandard(t *testing.T, body []byte) {
	t.Helper()
	for name, fresh := range decodeTargets {
		want, got := fresh(), fresh()
		wantErr := stdjson.Unmarshal(body, want)
		gotErr := json.Unmarshal(body, got)
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("%s from %q: error %v, the standard library's %v", name, body, gotErr, wantErr)
		}
		if wantErr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%s from %q:\n got %+v\nwant %+v", name, body, got, want)
		}
	}
}

// recallInputs returns the Recall events of testdata (not the golden
// normalized ones).
func recallInputs(tb testing.TB) [][]byte {
	tb.Helper()
	inputs, err := filepath.Glob("testdata/*.json")
	if err != nil || len(inputs) == 0 {
		tb.Fatalf("no testdata: %v", err)
	}
	var events [][]byte
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden.json") {
			continue
		}
		b, err := os.ReadFile(in)
		if err != nil {
			tb.Fatal(err)
		}
		events = append(events, b)
	}
	return events
}

func decodeSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	var seeds [][]byte
	for _, b := range recallInputs(tb) {
		seeds = append(seeds, b)
		if raw := rawOf(b); raw != nil {
			seeds = append(seeds, raw)
		}
	}
	return append(seeds,
		// A page, keys in another case, a duplicate key, a wrong type, a
		// number where a string goes, invalid UTF-8, a cut document.
		[]byte(`{"next":"https://x/?cursor=2","results":[{"id":"e1","calendar_id":"c","raw":{"summary":"a"}}]}`),
		[]byte(`{"ID":"e1","Calendar_Id":"c","IS_DELETED":true}`),
		[]byte(`{"id":"a","id":"b","calendar_id":"c"}`),
		[]byte(`{"id":1,"calendar_id":"c"}`),
		[]byte(`{"id":"e","is_deleted":"yes"}`),
		[]byte("{\"id\":\"e\xff\xfe\",\"calendar_id\":\"c\\ud800\"}"),
		[]byte(`{"id":"e","calendar_id":"c","start_time":"2026-13-01T00:00:00Z"}`),
		[]byte(`{"id":"e","calendar_id":"c","raw":{"summary":"a"`),
		[]byte(`{"summary":"s","attendees":[{"email":"a@x","optional":true,"responseStatus":"accepted"}],"start":{"dateTime":"2026-01-01T10:00:00+01:00"}}`),
		[]byte(`{"subject":"s","isAllDay":false,"attendees":[{"emailAddress":{"address":"a@x"},"status":{"response":"accepted"}}]}`),
		[]byte(`null`), []byte(`[]`), []byte(` {} `),
	)
}

// rawOf returns the platform event inside a Recall event, or nil.
func rawOf(b []byte) []byte {
	var e struct {
		Raw stdjson.RawMessage `json:"raw"`
	}
	if stdjson.Unmarshal(b, &e) != nil || len(e.Raw) == 0 {
		return nil
	}
	return e.Raw
}

func TestDecodesAsStandardLibrary(t *testing.T) {
	for _, b := range decodeSeeds(t) {
		checkDecodesAsStandard(t, b)
	}
}

func FuzzDecodesAsStandardLibrary(f *testing.F) {
	for _, b := range decodeSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(checkDecodesAsStandard)
}
