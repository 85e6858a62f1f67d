package postpress

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/calsync/calsync/model"
)

// directCases are bodies where reading the webhook straight from the body
// could drift from encoding/json: each must either give what json.Unmarshal
// gives or hand the body to it.
var directCases = []string{
	`{"event":"calendar_event_created","account_id":"a","calendar_id":"c","id":"e"}`,
	`{"event":"calendar_event_created","Account_ID":"a","calendar_id":"c","id":"e"}`, // folds to account_id
	`{"event":"calendar_event_created","account_id":"a","calendar_id":"c","ıd":"e"}`, // non-ASCII key
	`{"event":"calendar_event_created","account_id":"a","calendar_id":"c","id":5}`,   // wrong type
	`{"event":null,"title":null,"is_all_day":null,"start":null,"attendees":null,"recurrence":null,"organizer":null}`,
	`{"is_all_day":"true"}`,
	`{"start":{"date_time":"2026-01-01T10:00:00Z","Time_Zone":"UTC"}}`,
	`{"start":{"date_time":"2026-01-01T10:00:00Z","time_zone":7}}`,
	`{"start":{},"end":{"date_time":null},"organizer":{"email":"o@example.com","extra":[1,2]}}`,
	`{"start":"2026-01-01"}`,
	`{"recurrence":"RRULE:FREQ=DAILY\nEXDATE:20260101\r\n"}`,
	`{"recurrence":["RRULE:FREQ=DAILY", null, " EXDATE:1 "]}`,
	`{"recurrence":["RRULE:FREQ=DAILY", 3]}`,
	`{"recurrence":{}}`,
	`{"attendees":[]}`,
	`{"attendees":[" a@example.com ", null, {"email":"b@example.com","optional":"YES","organizer":true,"resource":"1"}]}`,
	`{"attendees":[{"optional":1}]}`,
	`{"attendees":[{"optional":1.0}]}`,
	`{"attendees":[{"optional":"tru\u0065","organizer":{"x":1},"resource":[true]}]}`,
	`{"attendees":[{"address":"c@example.com","displayName":"","name":"C","responseStatus":"","status":"tentative"}]}`,
	`{"attendees":[{"email":"","status":{"response":"accepted"}}]}`,
	`{"attendees":[{"status":{"Response":"accepted"}}]}`,
	`{"attendees":[{"status":{"response":3}}]}`,
	`{"attendees":[{"status":""}]}`,
	`{"attendees":[{"status":null,"emailAddress":null}]}`,
	`{"attendees":[{"emailAddress":{"address":"d@example.com","name":"D"}}]}`,
	`{"attendees":[{"display_name":"E","emailAddress":{"address":"e@example.com","name":"Other"}}]}`,
	`{"attendees":[{"emailAddress":{"address":"f@example.com","name":false}}]}`,
	`{"attendees":[{"emailAddress":["f@example.com"]}]}`,
	`{"attendees":[true]}`,
	`{"attendees":{"email":"g@example.com"}}`,
	`{"title":"caf\u00e9 \"quoted\"","body":"line\nbreak","unknown":{"deep":[1,{"x":null}]}}`,
	`{"title":"a","title":"b"}`,  // a field given twice
	`{"title":"a","title":null}`, // a later null keeps the earlier value
	`{"start":{"date_time":"2026-01-01T10:00:00Z"},"start":{"time_zone":"UTC"}}`, // objects merge
	`{"start":{"time_zone":"UTC","time_zone":"Europe/Paris"}}`,
	`{"attendees":[{"email":"a@example.com","email":"b@example.com"}]}`,
	`{"attendees":[{"x":1,"x":2,"email":"a@example.com","status":[1],"emailAddress":"e"}]}`,
	`{"attendees":[{"optional":"1","organizer":null,"resource":{}},{"status":{"response":null}}]}`,
	`{"unknown":1,"unknown":[2]}`,
	`{"t\u0069tle":"escaped key"}`,
	`{"title":"` + "\xff" + `"}`,
	`{"title":"x"} `, ` {"title":"x"}`, `{"title":"x"}x`, `{"title":1e400}`, `{"n":1e400}`,
}

// TestReadDirectMatchesEncodingJSON: where readDirect takes a body on, it
// gives what json.Unmarshal gives; the cases that would differ are handed
// over.
func TestReadDirectMatchesEncodingJSON(t *testing.T) {
	bodies := directCases
	inputs, _ := filepath.Glob("testdata/*.json")
	for _, in := range inputs {
		if !strings.HasSuffix(in, ".golden.json") {
			body := mustRead(t, in)
			// The provider's payloads all take the direct path.
			if _, _, ok := readDirect(body); !ok {
				t.Errorf("readDirect handed %s over", in)
			}
			bodies = append(bodies, string(body))
		}
	}
	handed := 0
	for _, body := range bodies {
		if !checkDirect(t, []byte(body)) {
			handed++
		}
	}
	if handed == 0 || handed == len(bodies) {
		t.Fatalf("%d of %d bodies handed to encoding/json", handed, len(bodies))
	}
	for _, body := range []string{directCases[1], directCases[2], directCases[3], `{"attendees":[{"optional":1}]}`,
		`{"attendees":[{"status":{"Response":"accepted"}}]}`, `{"title":"a","title":"b"}`, `{"title":1e400}`,
		`{"n":1e400}`, `{"start":{"time_zone":"UTC","time_zone":"Europe/Paris"}}`} {
		if _, _, ok := readDirect([]byte(body)); ok {
			t.Errorf("readDirect took on %s", body)
		}
	}
}

// checkDirect compares readDirect with json.Unmarshal on body and reports
// whether readDirect took it on. What it takes on, StructFromJSON decodes,
// and the payload it keeps is the body.
func checkDirect(t *testing.T, body []byte) bool {
	t.Helper()
	got, raw, ok := readDirect(body)
	if !ok {
		return false
	}
	if _, err := model.StructFromJSON(body); err != nil {
		t.Fatalf("readDirect took on %q, which StructFromJSON refuses: %v", body, err)
	}
	if want := bytes.TrimLeft(body, " \t\r\n"); !bytes.Equal(raw.Bytes(), want) {
		t.Fatalf("readDirect kept %q of %q", raw.Bytes(), body)
	}
	want := new(Webhook)
	if err := json.Unmarshal(body, want); err != nil {
		t.Fatalf("readDirect took on %s, which json.Unmarshal refuses: %v", body, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("readDirect(%s)\n = %+v\nencoding/json gives\n   %+v", body, got, want)
	}
	return true
}

// FuzzReadDirect: for any body, readDirect agrees with encoding/json or
// hands the body over.
func FuzzReadDirect(f *testing.F) {
	for _, body := range directCases {
		f.Add([]byte(body))
	}
	inputs, _ := filepath.Glob("testdata/*.json")
	for _, in := range inputs {
		if !strings.HasSuffix(in, ".golden.json") {
			f.Add(mustRead(f, in))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkDirect(t, body) })
}

// TestParseKeepsTheBody: the raw payload Parse keeps is the body itself,
// which NormalizeJSON hands on undecoded and Normalize decodes.
func TestParseKeepsTheBody(t *testing.T) {
	body, err := os.ReadFile("testdata/seed_updated.json")
	if err != nil {
		t.Fatal(err)
	}
	w, err := Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.rawJSON.Bytes(), bytes.TrimLeft(body, " \t\r\n")) {
		t.Fatal("Parse did not keep the body as the raw payload")
	}
	ev, raw, err := NormalizeJSON(w, body)
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetRaw() != nil || !bytes.Equal(raw.Bytes(), w.rawJSON.Bytes()) {
		t.Fatal("NormalizeJSON decoded the body, or returned another payload")
	}
	decoded, err := Normalize(w, body)
	if err != nil {
		t.Fatal(err)
	}
	again, err := model.StructFromJSON(body)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.AsMap(), decoded.GetRaw().AsMap()) {
		t.Fatal("Normalize's raw payload differs from the body's")
	}
}
