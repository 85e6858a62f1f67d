package postpress

import (
	"encoding/json"
	"testing"
)

// TestJSONStringMatchesUnmarshal: the shortcut for plain strings decodes
// exactly what json.Unmarshal decodes, and refuses what it refuses.
func TestJSONStringMatchesUnmarshal(t *testing.T) {
	for _, raw := range []string{`"dev@example.com"`, `""`, `"Zoë 日本"`, `"quote \" inside"`, `"tab\tescaped"`,
		`"\u00e9"`, "\"bad \xff utf8\"", "\"ctl \x01\"", `"unterminated`, `42`, `null`, `true`, `{"a":1}`, `["x"]`, `"`, ``} {
		var want string
		wantErr := json.Unmarshal([]byte(raw), &want)
		got, ok := jsonString(json.RawMessage(raw))
		if ok != (wantErr == nil) || got != want {
			t.Errorf("jsonString(%q) = %q, %v; json.Unmarshal gives %q, %v", raw, got, ok, want, wantErr)
		}
	}
}

// TestAttendeeDecodeAllocations: decoding an attendee object no longer
// runs json.Unmarshal once per field it looks up.
func TestAttendeeDecodeAllocations(t *testing.T) {
	raw := []byte(`{"email": "dev@example.com", "display_name": "Dev", "response_status": "accepted", "organizer": true}`)
	var a Attendee
	allocs := testing.AllocsPerRun(100, func() {
		if err := a.UnmarshalJSON(raw); err != nil {
			t.Fatal(err)
		}
	})
	if a.Email != "dev@example.com" || a.DisplayName != "Dev" || a.ResponseStatus != "accepted" || !a.Organizer {
		t.Fatalf("decoded %+v", a)
	}
	if allocs > 24 {
		t.Fatalf("%.0f allocations to decode one attendee, want at most 24 (27 with one json.Unmarshal per field)", allocs)
	}
	t.Logf("%.0f allocations", allocs)
}
