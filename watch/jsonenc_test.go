package watch

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// randomStrings are the strings fields get: plain, escaped in JSON,
// multi-byte, and invalid UTF-8 (which protojson refuses).
var randomStrings = []string{
	"", "a", "Team sync", `quote " and \ backslash`, "line\nbreak\ttab\r", "\x00\x01\x1f\x7f",
	"é ü 日本語 🎉", "\u2028\u2029", "<b>&amp;</b>", "bad \xff utf-8",
}

// fillRandom sets each field of m, or leaves it unset, at random. It goes
// by the descriptor, so a field added to the API is covered without
// changing the test.
func fillRandom(r *rand.Rand, m protoreflect.Message, depth int) {
	switch m.Descriptor().FullName() {
	case "google.protobuf.Timestamp":
		fillTimestamp(r, m)
		return
	case "google.protobuf.Struct":
		s := randomStruct(r, depth)
		proto.Merge(m.Interface(), s)
		return
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if r.IntN(3) == 0 {
			continue
		}
		if fd.IsList() {
			l := m.Mutable(fd).List()
			for range r.IntN(4) {
				if fd.Kind() == protoreflect.MessageKind {
					e := l.NewElement()
					fillRandom(r, e.Message(), depth+1)
					l.Append(e)
				} else {
					l.Append(randomScalar(r, fd))
				}
			}
			continue
		}
		if fd.Kind() == protoreflect.MessageKind {
			if depth < 3 {
				fillRandom(r, m.Mutable(fd).Message(), depth+1)
			}
			continue
		}
		m.Set(fd, randomScalar(r, fd))
	}
}

func randomScalar(r *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(randomStrings[r.IntN(len(randomStrings))])
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(r.IntN(2) == 0)
	case protoreflect.EnumKind:
		values := fd.Enum().Values()
		if r.IntN(8) == 0 {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(values.Len() + 40)) // unknown to this build
		}
		return protoreflect.ValueOfEnum(values.Get(r.IntN(values.Len())).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(r.Int32() - math.MaxInt32/2)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(r.Int64() - math.MaxInt64/2)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(r.Uint32())
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(r.Uint64())
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(r.NormFloat64() * 1e6)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(r.NormFloat64()))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte(randomStrings[r.IntN(len(randomStrings))]))
	}
	panic("fillRandom: unhandled kind " + fd.Kind().String())
}

func fillTimestamp(r *rand.Rand, m protoreflect.Message) {
	ts := m.Interface().(*timestamppb.Timestamp)
	switch r.IntN(10) {
	case 0:
		ts.Seconds = minTimestampSeconds - 1 // out of range: protojson refuses it
	case 1:
		ts.Seconds = maxTimestampSeconds
	case 2:
		ts.Seconds = minTimestampSeconds
	default:
		ts.Seconds = r.Int64N(4_000_000_000) - 1_000_000_000
	}
	switch r.IntN(5) {
	case 0:
		ts.Nanos = 0
	case 1:
		ts.Nanos = r.Int32N(1000) * 1_000_000
	case 2:
		ts.Nanos = r.Int32N(1_000_000) * 1000
	case 3:
		ts.Nanos = r.Int32N(1_000_000_000)
	default:
		if r.IntN(10) == 0 {
			ts.Nanos = 1_000_000_000 // invalid
		}
	}
}

func randomStruct(r *rand.Rand, depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for range r.IntN(5) {
		s.Fields[randomStrings[r.IntN(len(randomStrings))]] = randomValue(r, depth+1)
	}
	return s
}

func randomValue(r *rand.Rand, depth int) *structpb.Value {
	n := 5
	if depth < 4 {
		n = 7
	}
	switch r.IntN(n) {
	case 0:
		return structpb.NewNullValue()
	case 1:
		if r.IntN(20) == 0 {
			return structpb.NewNumberValue(math.NaN()) // protojson refuses it
		}
		return structpb.NewNumberValue([]float64{0, -0.5, 1e21, 3, 1e-7, 123456789.125, -1e300}[r.IntN(7)])
	case 2:
		return structpb.NewStringValue(randomStrings[r.IntN(len(randomStrings))])
	case 3:
		return structpb.NewBoolValue(r.IntN(2) == 0)
	case 4:
		if r.IntN(20) == 0 {
			return &structpb.Value{} // no kind: protojson refuses it
		}
		return structpb.NewBoolValue(true)
	case 5:
		return structpb.NewStructValue(randomStruct(r, depth))
	default:
		l := &structpb.ListValue{}
		for range r.IntN(4) {
			l.Values = append(l.Values, randomValue(r, depth+1))
		}
		return structpb.NewListValue(l)
	}
}

// sameJSON reports whether a and b are the same JSON value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("invalid JSON %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

// TestMarshalJSONAsProtojson encodes random changes, snapshots' events and
// bookmarks both ways: the same JSON value where protojson gives one, an
// error where protojson gives one.
func TestMarshalJSONAsProtojson(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		var m proto.Message
		switch i % 3 {
		case 0:
			m = &calsyncv1.Change{}
		case 1:
			m = &calsyncv1.CalendarEvent{}
		default:
			m = &calsyncv1.Bookmark{}
		}
		fillRandom(r, m.ProtoReflect(), 0)
		want, wantErr := restJSON.Marshal(m)
		got, err := marshalJSON(restJSON, m)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("%v: error %v, protojson's %v", m, err, wantErr)
		}
		if err == nil && !sameJSON(t, got, want) {
			t.Fatalf("%v:\n got %s\nwant %s", m, got, want)
		}
	}
}

// TestChangesTakeTheFastPath guards the point of the encoder: a change as
// the store writes it is encoded without protojson.
func TestChangesTakeTheFastPath(t *testing.T) {
	ts := timestamppb.New(timestamppb.Now().AsTime())
	raw, err := structpb.NewStruct(map[string]any{"summary": "Sync", "n": 3.5, "attendees": []any{map[string]any{"email": "a@x"}}, "x": nil})
	if err != nil {
		t.Fatal(err)
	}
	ev := &calsyncv1.CalendarEvent{
		Id: "evt_1", CalendarId: "cal_1", Provider: "postpress", Title: "Sync \"weekly\"", StartTime: ts, EndTime: ts,
		Status: calsyncv1.EventStatus_EVENT_STATUS_CONFIRMED, Organizer: &calsyncv1.Person{Email: "o@x"},
		Attendees:  []*calsyncv1.Attendee{{Email: "a@x", ResponseStatus: calsyncv1.ResponseStatus_RESPONSE_STATUS_ACCEPTED}},
		Recurrence: []string{"RRULE:FREQ=WEEKLY"}, Raw: raw, CreateTime: ts, UpdateTime: ts,
	}
	c := &calsyncv1.Change{Cursor: "c1", Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED, Event: ev, PreviousEvent: ev,
		ChangedFields: []string{"title"}, CommitTime: ts,
		Calendar: &calsyncv1.Calendar{Id: "cal_1", StatusChanges: []*calsyncv1.CalendarStatusChange{{Time: ts, Details: raw}}}}
	got, err := appendMessageJSON(nil, c.ProtoReflect())
	if err != nil {
		t.Fatalf("a change left to protojson: %v", err)
	}
	want, err := restJSON.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if !sameJSON(t, got, want) {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	// Other options are protojson's alone.
	camel := protojson.MarshalOptions{EmitDefaultValues: true}
	got, err = marshalJSON(camel, c)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := camel.Marshal(c); !sameJSON(t, got, want) {
		t.Fatalf("with other options got %s\nwant %s", got, want)
	}
}
