package postpress

import (
	"strings"
	"unicode/utf8"

	"github.com/calsync/calsync/model"
)

// readDirect reads a webhook straight from its body in one pass
// ([model.ReadJSONObject]), which also checks the body as the raw payload
// it becomes, without building that payload.
//
// It gives what json.Unmarshal into a Webhook gives, and reports false for
// anything where it might not: a value of the wrong JSON type (an error
// there), a key that matches a field only case-insensitively (encoding/json
// matches those too), a key given twice in an object it reads (encoding/json
// merges two objects given for one field, and a later null keeps an
// earlier value), a number where a lenient flag is read (its spelling
// matters). The caller then takes the slower path.
func readDirect(body []byte) (*Webhook, model.RawJSON, bool) {
	w := new(Webhook)
	var seen uint32
	raw, ok := model.ReadJSONObject(body, func(k string, r *model.JSONReader) bool {
		field := -1
		ok := true
		switch k {
		case "event":
			field = 0
			w.Event, ok = readString(r)
		case "webhook_name":
			field = 1
			w.WebhookName, ok = readString(r)
		case "account_id":
			field = 2
			w.AccountID, ok = readString(r)
		case "calendar_id":
			field = 3
			w.ProviderCalendarID, ok = readString(r)
		case "id":
			field = 4
			w.ID, ok = readString(r)
		case "master_event_id":
			field = 5
			w.MasterEventID, ok = readString(r)
		case "title":
			field = 6
			w.Title, ok = readString(r)
		case "body":
			field = 7
			w.Body, ok = readString(r)
		case "location":
			field = 8
			w.Location, ok = readString(r)
		case "visibility":
			field = 9
			w.Visibility, ok = readString(r)
		case "transparency":
			field = 10
			w.Transparency, ok = readString(r)
		case "event_type":
			field = 11
			w.EventType, ok = readString(r)
		case "color":
			field = 12
			w.Color, ok = readString(r)
		case "created_at":
			field = 13
			w.CreatedAt, ok = readString(r)
		case "updated_at":
			field = 14
			w.UpdatedAt, ok = readString(r)
		case "is_cancelled":
			field = 15
			w.IsCancelled, ok = readBool(r)
		case "is_all_day":
			field = 16
			w.IsAllDay, ok = readBool(r)
		case "is_attendees_list_hidden":
			field = 17
			w.IsAttendeesListHidden, ok = readBool(r)
		case "start":
			field = 18
			w.Start, ok = readDateTime(r)
		case "end":
			field = 19
			w.End, ok = readDateTime(r)
		case "organizer":
			field = 20
			w.Organizer, ok = readPerson(r)
		case "recurrence":
			field = 21
			w.Recurrence, ok = readRecurrence(r)
		case "attendees":
			field = 22
			w.Attendees, ok = readAttendees(r)
		default:
			return !foldsTo(k, webhookKeys) && r.Skip()
		}
		if seen&(1<<field) != 0 {
			return false
		}
		seen |= 1 << field
		return ok
	})
	if !ok {
		return nil, model.RawJSON{}, false
	}
	return w, raw, true
}

// webhookKeys are Webhook's JSON keys.
var webhookKeys = []string{"event", "webhook_name", "account_id", "calendar_id", "id", "master_event_id",
	"title", "body", "location", "visibility", "transparency", "event_type", "color", "created_at",
	"updated_at", "is_cancelled", "is_all_day", "is_attendees_list_hidden", "start", "end", "organizer",
	"recurrence", "attendees"}

// foldsTo reports whether encoding/json could take key, which is none of
// keys exactly, for one of them: it matches field names without regard to
// case, with Unicode's folding, so any non-ASCII key counts as a maybe.
func foldsTo(key string, keys []string) bool {
	for i := 0; i < len(key); i++ {
		if key[i] >= utf8.RuneSelf {
			return true
		}
	}
	for _, k := range keys {
		if strings.EqualFold(key, k) {
			return true
		}
	}
	return false
}

// readString reads a string field's value; null leaves it empty.
func readString(r *model.JSONReader) (string, bool) {
	if r.IsNull() {
		return "", true
	}
	return r.String()
}

// readBool reads a bool field's value; null leaves it false.
func readBool(r *model.JSONReader) (bool, bool) {
	if r.IsNull() {
		return false, true
	}
	return r.Bool()
}

// readStrings reads an object's members named keys, each a string or
// null, into vals. vals is nil where encoding/json would fail to read the
// object into a struct of string fields (a member of another type); ok is
// false where readDirect hands over: not an object, a key given twice, or
// one that only folds to one of keys.
func readStrings(r *model.JSONReader, keys ...string) (vals []string, ok bool) {
	vals = make([]string, len(keys))
	var seen uint32
	usable := true
	ok = r.Object(func(k string, r *model.JSONReader) bool {
		for i, want := range keys {
			if k != want {
				continue
			}
			if seen&(1<<i) != 0 {
				return false
			}
			seen |= 1 << i
			if r.IsNull() {
				return true
			}
			if s, isString := r.String(); isString {
				vals[i] = s
				return true
			}
			usable = false
			return r.Skip()
		}
		return !foldsTo(k, keys) && r.Skip()
	})
	if !usable {
		vals = nil
	}
	return vals, ok
}

// readStringPair reads a field holding null or an object of two string
// members, keyA and keyB: vals is nil for null.
func readStringPair(r *model.JSONReader, keyA, keyB string) (vals []string, ok bool) {
	if r.IsNull() {
		return nil, true
	}
	if vals, ok = readStrings(r, keyA, keyB); !ok || vals == nil {
		return nil, false
	}
	return vals, true
}

func readDateTime(r *model.JSONReader) (*DateTime, bool) {
	vals, ok := readStringPair(r, "date_time", "time_zone")
	if vals == nil {
		return nil, ok
	}
	return &DateTime{DateTime: vals[0], TimeZone: vals[1]}, true
}

func readPerson(r *model.JSONReader) (*Person, bool) {
	vals, ok := readStringPair(r, "email", "display_name")
	if vals == nil {
		return nil, ok
	}
	return &Person{Email: vals[0], DisplayName: vals[1]}, true
}

func readRecurrence(r *model.JSONReader) (Recurrence, bool) {
	if r.IsNull() {
		return nil, true
	}
	if s, isString := r.String(); isString {
		return recurrenceOf([]string{s}), true
	}
	var lines []string
	ok := r.Array(func(r *model.JSONReader) bool {
		s, isString := readString(r)
		lines = append(lines, s)
		return isString
	})
	return recurrenceOf(lines), ok
}

func readAttendees(r *model.JSONReader) ([]Attendee, bool) {
	if r.IsNull() {
		return nil, true
	}
	out := []Attendee{}
	ok := r.Array(func(r *model.JSONReader) bool {
		a, ok := readAttendee(r)
		out = append(out, a)
		return ok
	})
	return out, ok
}

// attendeeKeys are the members of an attendee object [Attendee.UnmarshalJSON] reads.
var attendeeKeys = [...]string{"email", "address", "display_name", "displayName", "name",
	"response_status", "responseStatus", "status", "optional", "organizer", "resource", "emailAddress"}

const (
	keyStatus       = 7
	keyOptional     = 8
	keyEmailAddress = 11
)

// readAttendee is [Attendee.UnmarshalJSON] in one pass.
func readAttendee(r *model.JSONReader) (Attendee, bool) {
	if r.IsNull() {
		return Attendee{}, true
	}
	if s, isString := r.String(); isString {
		return Attendee{Email: strings.TrimSpace(s)}, true
	}
	// strs holds each key's value when it is a string; flags the lenient
	// bools; status and emailAddress the strings of those objects, when
	// given and readable.
	var strs [len(attendeeKeys)]string
	var flags [3]bool
	var seen uint32
	var status, emailAddress []string
	ok := r.Object(func(k string, r *model.JSONReader) bool {
		i := -1
		for j, want := range attendeeKeys {
			if k == want {
				i = j
				break
			}
		}
		if i < 0 {
			return r.Skip()
		}
		if seen&(1<<i) != 0 {
			return false
		}
		seen |= 1 << i
		switch {
		case i >= keyOptional && i < keyEmailAddress:
			if b, isBool := r.Bool(); isBool {
				flags[i-keyOptional] = b
				return true
			}
			if s, isString := r.String(); isString {
				flags[i-keyOptional] = truthy(s)
				return true
			}
			return !r.IsNumber() && r.Skip()
		case i == keyEmailAddress:
			var ok bool
			emailAddress, ok = readNested(r, "address", "name")
			return ok
		}
		if s, isString := r.String(); isString {
			strs[i] = s
			return true
		}
		if i != keyStatus {
			return r.Skip()
		}
		var ok bool
		status, ok = readNested(r, "response")
		return ok
	})
	if !ok {
		return Attendee{}, false
	}
	first := func(is ...int) string {
		for _, i := range is {
			if strs[i] != "" {
				return strs[i]
			}
		}
		return ""
	}
	a := Attendee{
		Email:          first(0, 1),
		DisplayName:    first(2, 3, 4),
		ResponseStatus: first(5, 6, 7),
		Optional:       flags[0],
		Organizer:      flags[1],
		Resource:       flags[2],
	}
	if a.ResponseStatus == "" && status != nil {
		a.ResponseStatus = status[0]
	}
	if a.Email == "" && emailAddress != nil {
		a.Email = emailAddress[0]
		if a.DisplayName == "" {
			a.DisplayName = emailAddress[1]
		}
	}
	return a, true
}

// readNested is what json.Unmarshal of the value at r into a struct of
// string fields named keys gives: vals is nil where it would fail (the
// value is not an object or null, or a member is of another type), and the
// attendee decoder then ignores it. ok is false where readDirect hands
// over (see readStrings).
func readNested(r *model.JSONReader, keys ...string) (vals []string, ok bool) {
	if r.IsNull() {
		return make([]string, len(keys)), true
	}
	if !r.IsObject() {
		return nil, r.Skip()
	}
	return readStrings(r, keys...)
}
