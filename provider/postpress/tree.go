package postpress

import (
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
)

// fromRaw reads a webhook out of its raw payload, the tree of values
// [model.StructFromJSON] decoded the body into, so that the body is
// decoded once for both: the tree is kept as the event's raw payload.
//
// It gives what json.Unmarshal into a Webhook gives, and reports false for
// anything where it might not: a value of the wrong JSON type (an error
// there), a key that matches a field only case-insensitively (encoding/json
// matches those too), a number where a lenient flag is read (its spelling
// matters). The caller then decodes the body with encoding/json. One
// difference is by design: a key given twice counts once, the last one, as
// in the raw payload; encoding/json would merge two objects given for one
// field and let a later null keep an earlier value.
func fromRaw(raw *structpb.Struct) (*Webhook, bool) {
	w := new(Webhook)
	for k, v := range raw.GetFields() {
		ok := true
		switch k {
		case "event":
			w.Event, ok = stringField(v)
		case "webhook_name":
			w.WebhookName, ok = stringField(v)
		case "account_id":
			w.AccountID, ok = stringField(v)
		case "calendar_id":
			w.ProviderCalendarID, ok = stringField(v)
		case "id":
			w.ID, ok = stringField(v)
		case "master_event_id":
			w.MasterEventID, ok = stringField(v)
		case "title":
			w.Title, ok = stringField(v)
		case "body":
			w.Body, ok = stringField(v)
		case "location":
			w.Location, ok = stringField(v)
		case "visibility":
			w.Visibility, ok = stringField(v)
		case "transparency":
			w.Transparency, ok = stringField(v)
		case "event_type":
			w.EventType, ok = stringField(v)
		case "color":
			w.Color, ok = stringField(v)
		case "created_at":
			w.CreatedAt, ok = stringField(v)
		case "updated_at":
			w.UpdatedAt, ok = stringField(v)
		case "is_cancelled":
			w.IsCancelled, ok = boolField(v)
		case "is_all_day":
			w.IsAllDay, ok = boolField(v)
		case "is_attendees_list_hidden":
			w.IsAttendeesListHidden, ok = boolField(v)
		case "start":
			w.Start, ok = dateTimeField(v)
		case "end":
			w.End, ok = dateTimeField(v)
		case "organizer":
			w.Organizer, ok = personField(v)
		case "recurrence":
			w.Recurrence, ok = recurrenceField(v)
		case "attendees":
			w.Attendees, ok = attendeesField(v)
		default:
			ok = !foldsTo(k, webhookKeys)
		}
		if !ok {
			return nil, false
		}
	}
	return w, true
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

// stringField is a string field's value; null leaves it empty.
func stringField(v *structpb.Value) (string, bool) {
	switch x := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return x.StringValue, true
	case *structpb.Value_NullValue:
		return "", true
	}
	return "", false
}

// boolField is a bool field's value; null leaves it false.
func boolField(v *structpb.Value) (bool, bool) {
	switch x := v.GetKind().(type) {
	case *structpb.Value_BoolValue:
		return x.BoolValue, true
	case *structpb.Value_NullValue:
		return false, true
	}
	return false, false
}

// object is the fields of an object whose keys are all among keys; ok is
// false when one only folds to one of them, or v is not an object.
func object(v *structpb.Value, keys ...string) (fields map[string]*structpb.Value, ok bool) {
	s := v.GetStructValue()
	if s == nil {
		return nil, false
	}
	for k := range s.GetFields() {
		known := false
		for _, want := range keys {
			known = known || k == want
		}
		if !known && foldsTo(k, keys) {
			return nil, false
		}
	}
	return s.GetFields(), true
}

func dateTimeField(v *structpb.Value) (*DateTime, bool) {
	if _, null := v.GetKind().(*structpb.Value_NullValue); null {
		return nil, true
	}
	f, ok := object(v, "date_time", "time_zone")
	if !ok {
		return nil, false
	}
	d := new(DateTime)
	var okDate, okZone bool
	d.DateTime, okDate = optionalString(f["date_time"])
	d.TimeZone, okZone = optionalString(f["time_zone"])
	return d, okDate && okZone
}

func personField(v *structpb.Value) (*Person, bool) {
	if _, null := v.GetKind().(*structpb.Value_NullValue); null {
		return nil, true
	}
	f, ok := object(v, "email", "display_name")
	if !ok {
		return nil, false
	}
	p := new(Person)
	var okEmail, okName bool
	p.Email, okEmail = optionalString(f["email"])
	p.DisplayName, okName = optionalString(f["display_name"])
	return p, okEmail && okName
}

// optionalString is a string member's value: absent or null is empty.
func optionalString(v *structpb.Value) (string, bool) {
	if v == nil {
		return "", true
	}
	return stringField(v)
}

func recurrenceField(v *structpb.Value) (Recurrence, bool) {
	switch x := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return nil, true
	case *structpb.Value_StringValue:
		return recurrenceOf([]string{x.StringValue}), true
	case *structpb.Value_ListValue:
		lines := make([]string, 0, len(x.ListValue.GetValues()))
		for _, l := range x.ListValue.GetValues() {
			s, ok := stringField(l)
			if !ok {
				return nil, false
			}
			lines = append(lines, s)
		}
		return recurrenceOf(lines), true
	}
	return nil, false
}

func attendeesField(v *structpb.Value) ([]Attendee, bool) {
	switch x := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return nil, true
	case *structpb.Value_ListValue:
		out := make([]Attendee, len(x.ListValue.GetValues()))
		for i, a := range x.ListValue.GetValues() {
			var ok bool
			if out[i], ok = attendeeOf(a); !ok {
				return nil, false
			}
		}
		return out, true
	}
	return nil, false
}

// attendeeOf is [Attendee.UnmarshalJSON] on a decoded value.
func attendeeOf(v *structpb.Value) (Attendee, bool) {
	switch x := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return Attendee{Email: strings.TrimSpace(x.StringValue)}, true
	case *structpb.Value_NullValue:
		return Attendee{}, true
	case *structpb.Value_StructValue:
	default:
		return Attendee{}, false
	}
	m := v.GetStructValue().GetFields()
	a := Attendee{
		Email:          firstStringValue(m, "email", "address"),
		DisplayName:    firstStringValue(m, "display_name", "displayName", "name"),
		ResponseStatus: firstStringValue(m, "response_status", "responseStatus", "status"),
	}
	var ok1, ok2, ok3 bool
	a.Optional, ok1 = lenientBoolValue(m["optional"])
	a.Organizer, ok2 = lenientBoolValue(m["organizer"])
	a.Resource, ok3 = lenientBoolValue(m["resource"])
	if !ok1 || !ok2 || !ok3 {
		return Attendee{}, false
	}
	if a.ResponseStatus == "" {
		if st, ok := m["status"]; ok {
			resp, usable, ok := nestedStrings(st, "response")
			if !ok {
				return Attendee{}, false
			}
			if usable {
				a.ResponseStatus = resp[0]
			}
		}
	}
	if a.Email == "" {
		if ea, ok := m["emailAddress"]; ok {
			addr, usable, ok := nestedStrings(ea, "address", "name")
			if !ok {
				return Attendee{}, false
			}
			if usable {
				a.Email = addr[0]
				if a.DisplayName == "" {
					a.DisplayName = addr[1]
				}
			}
		}
	}
	return a, true
}

// firstStringValue is [firstString] on decoded values.
func firstStringValue(m map[string]*structpb.Value, keys ...string) string {
	for _, k := range keys {
		if s := m[k].GetStringValue(); s != "" {
			return s
		}
	}
	return ""
}

// lenientBoolValue is [lenientBool] on a decoded value (nil when absent).
// A number's spelling decides there (1 is true, 1.0 is not), which the
// decoded value no longer has.
func lenientBoolValue(v *structpb.Value) (b, ok bool) {
	switch x := v.GetKind().(type) {
	case *structpb.Value_BoolValue:
		return x.BoolValue, true
	case *structpb.Value_StringValue:
		return truthy(x.StringValue), true
	case *structpb.Value_NumberValue:
		return false, false
	}
	return false, true
}

// nestedStrings is what json.Unmarshal of v into a struct of string fields
// named keys gives: usable is false where it would fail (v not an object or
// null, or a field of another type), and the attendee decoder then ignores
// v. ok is false for a key that only folds to one of keys.
func nestedStrings(v *structpb.Value, keys ...string) (vals []string, usable, ok bool) {
	vals = make([]string, len(keys))
	switch v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return vals, true, true
	case *structpb.Value_StructValue:
	default:
		return nil, false, true
	}
	f, ok := object(v, keys...)
	if !ok {
		return nil, false, false
	}
	for i, k := range keys {
		s, isString := optionalString(f[k])
		if !isString {
			return nil, false, true
		}
		vals[i] = s
	}
	return vals, true, true
}
