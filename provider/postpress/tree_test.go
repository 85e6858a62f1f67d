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

// fromRawCases are bodies where reading the webhook out of the raw payload
// could drift from encoding/json: each must either give what json.Unmarshal
// gives or hand the body to it.
var fromRawCases = []string{
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
}

// TestFromRawMatchesEncodingJSON: where fromRaw takes a body on, it gives
// what json.Unmarshal gives; the cases that would differ are handed over.
func TestFromRawMatchesEncodingJSON(t *testing.T) {
	bodies := fromRawCases
	inputs, _ := filepath.Glob("testdata/*.json")
	for _, in := range inputs {
		if !strings.HasSuffix(in, ".golden.json") {
			bodies = append(bodies, string(mustRead(t, in)))
		}
	}
	handed := 0
	for _, body := range bodies {
		if !checkFromRaw(t, []byte(body)) {
			handed++
		}
	}
	// The golden inputs and most cases are taken on; the ones written to be
	// handed over are.
	if handed == 0 || handed == len(bodies) {
		t.Fatalf("%d of %d bodies handed to encoding/json", handed, len(bodies))
	}
	for _, body := range []string{fromRawCases[1], fromRawCases[2], fromRawCases[3], `{"attendees":[{"optional":1}]}`,
		`{"attendees":[{"status":{"Response":"accepted"}}]}`} {
		raw, err := model.StructFromJSON([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := fromRaw(raw); ok {
			t.Errorf("fromRaw took on %s", body)
		}
	}
}

// checkFromRaw compares fromRaw with json.Unmarshal on body and reports
// whether fromRaw took it on.
func checkFromRaw(t *testing.T, body []byte) bool {
	t.Helper()
	raw, err := model.StructFromJSON(body)
	if err != nil || hasDuplicateKeys(body) {
		return false
	}
	got, ok := fromRaw(raw)
	if !ok {
		return false
	}
	want := new(Webhook)
	if err := json.Unmarshal(body, want); err != nil {
		t.Fatalf("fromRaw took on %s, which json.Unmarshal refuses: %v", body, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("fromRaw(%s)\n = %+v\nencoding/json gives\n   %+v", body, got, want)
	}
	return true
}

// hasDuplicateKeys reports whether an object in body names a key twice,
// where fromRaw departs from encoding/json by design.
func hasDuplicateKeys(body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	type level struct {
		keys   map[string]bool
		object bool
		key    bool // the next string token of an object is a key
	}
	var stack []*level
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		top := (*level)(nil)
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.object && top.key
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if top != nil && top.object {
					top.key = true
				}
				stack = append(stack, &level{keys: map[string]bool{}, object: v == '{', key: v == '{'})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if isKey {
				if top.keys[v] {
					return true
				}
				top.keys[v] = true
				top.key = false
				continue
			}
		}
		if top != nil && top.object {
			top.key = true
		}
	}
}

// FuzzFromRaw: for any body, fromRaw agrees with encoding/json or hands
// the body over.
func FuzzFromRaw(f *testing.F) {
	for _, body := range fromRawCases {
		f.Add([]byte(body))
	}
	inputs, _ := filepath.Glob("testdata/*.json")
	for _, in := range inputs {
		if !strings.HasSuffix(in, ".golden.json") {
			f.Add(mustRead(f, in))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkFromRaw(t, body) })
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
