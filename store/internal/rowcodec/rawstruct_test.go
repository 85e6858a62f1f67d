package rowcodec

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
)

// randomValue builds a Value of every kind, nested up to depth, with
// strings long enough that lengths need one, two and three varint bytes.
func randomValue(rng *rand.Rand, depth int) *structpb.Value {
	kinds := 4
	if depth > 0 {
		kinds = 6
	}
	switch rng.IntN(kinds + 1) {
	case 0:
		return structpb.NewNullValue()
	case 1:
		return structpb.NewNumberValue(rng.NormFloat64() * 1e6)
	case 2:
		return structpb.NewStringValue(strings.Repeat("é", []int{0, 3, 70, 9000}[rng.IntN(4)]))
	case 3:
		return structpb.NewBoolValue(rng.IntN(2) == 0)
	case 4:
		return &structpb.Value{} // no kind at all
	case 5:
		return structpb.NewStructValue(randomStruct(rng, depth-1))
	default:
		l := &structpb.ListValue{}
		for range rng.IntN(4) {
			l.Values = append(l.Values, randomValue(rng, depth-1))
		}
		return structpb.NewListValue(l)
	}
}

func randomStruct(rng *rand.Rand, depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for i := range rng.IntN(5) {
		s.Fields[fmt.Sprintf("k%d", i)] = randomValue(rng, depth)
	}
	return s
}

// The raw payload's encoding reads back as the payload it was written
// from, for every kind of value, nesting and length; a struct with one key
// per level is written byte for byte as proto.Marshal writes it.
func TestSplitRawEncodesRawAsProtobufDoes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		raw := randomStruct(rng, 4)
		e := &calsyncv1.CalendarEvent{Id: "e", Title: "t", Raw: raw}
		data, got, err := SplitRaw(e)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		back, err := DecodeEvent(data, got)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if !proto.Equal(back, e) {
			t.Fatalf("case %d: read back %v, want %v", i, back, e)
		}
	}
	one := &structpb.Struct{Fields: map[string]*structpb.Value{
		"a": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{
			structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
				"b": structpb.NewStringValue(strings.Repeat("x", 20000)),
			}}),
			structpb.NewNumberValue(-0.5), structpb.NewBoolValue(false), structpb.NewNullValue(), nil, {},
		}}),
	}}
	for _, s := range []*structpb.Struct{one, {Fields: map[string]*structpb.Value{"": nil}}} {
		want, err := proto.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		_, got, err := SplitRaw(&calsyncv1.CalendarEvent{Raw: s})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("raw encoding of %v:\n got %x\nwant %x", s, got, want)
		}
	}
	// An empty payload's protobuf encoding is empty, which a driver may
	// read back as no payload: it is kept as JSON.
	empty := &calsyncv1.CalendarEvent{Raw: &structpb.Struct{}}
	if data, raw, err := SplitRaw(empty); err != nil || string(raw) != "{}" {
		t.Errorf("empty payload encodes as %q, %v; want {}", raw, err)
	} else if back, err := DecodeEvent(data, raw); err != nil || !proto.Equal(back, empty) {
		t.Errorf("empty payload reads back as %v, %v", back, err)
	}
	if data, raw, err := SplitRaw(&calsyncv1.CalendarEvent{}); err != nil || raw != nil {
		t.Errorf("no payload encodes as %v, %v; want nil", raw, err)
	} else {
		// No payload is stored as NULL and read back as nil. A
		// zero-length blob, which no encoding writes and which a driver
		// may read as an empty slice, is no payload either.
		for _, stored := range [][]byte{nil, {}} {
			if back, err := DecodeEvent(data, stored); err != nil || back.GetRaw() != nil {
				t.Errorf("no payload (%#v) reads back as %v, %v; want no raw payload", stored, back.GetRaw(), err)
			}
		}
	}
	bad := &calsyncv1.CalendarEvent{Raw: &structpb.Struct{Fields: map[string]*structpb.Value{"k": structpb.NewStringValue("\xff")}}}
	if _, _, err := SplitRaw(bad); err == nil {
		t.Error("SplitRaw encoded a payload that is not valid UTF-8")
	}
}

// EncodeEvent refuses what CheckEncodable refuses, in the raw payload or
// elsewhere, with CheckEncodable's error naming the field.
func TestEncodeEventRefusesWhatCheckEncodableRefuses(t *testing.T) {
	base := func() *calsyncv1.CalendarEvent {
		return &calsyncv1.CalendarEvent{Id: "e", CalendarId: "c", Provider: "p",
			Raw: &structpb.Struct{Fields: map[string]*structpb.Value{"ok": structpb.NewStringValue("fine")}}}
	}
	cases := map[string]func(e *calsyncv1.CalendarEvent){
		"title not UTF-8":     func(e *calsyncv1.CalendarEvent) { e.Title = "\xff" },
		"start out of range":  func(e *calsyncv1.CalendarEvent) { e.StartTime = &timestamppb.Timestamp{Seconds: math.MaxInt64} },
		"raw key not UTF-8":   func(e *calsyncv1.CalendarEvent) { e.Raw.Fields["\xfe"] = structpb.NewBoolValue(true) },
		"raw string not UTF8": func(e *calsyncv1.CalendarEvent) { e.Raw.Fields["s"] = structpb.NewStringValue("a\xffb") },
		"raw NaN": func(e *calsyncv1.CalendarEvent) {
			e.Raw.Fields["l"] = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(math.NaN())}})
		},
		"raw infinity deep": func(e *calsyncv1.CalendarEvent) {
			e.Raw.Fields["s"] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(math.Inf(-1))}})
		},
	}
	for name, spoil := range cases {
		t.Run(name, func(t *testing.T) {
			e := base()
			spoil(e)
			want := model.CheckEncodable(e)
			if want == nil {
				t.Fatal("CheckEncodable accepts the case")
			}
			_, err := EncodeEvent(e)
			if !errors.Is(err, store.ErrInvalidArgument) || !errors.Is(err, model.ErrNotEncodable) {
				t.Fatalf("EncodeEvent: %v, want an invalid argument that cannot be encoded", err)
			}
			if !strings.Contains(err.Error(), want.Error()) {
				t.Errorf("EncodeEvent: %v, want it to say %q", err, want)
			}
		})
	}
	if _, err := EncodeEvent(base()); err != nil {
		t.Errorf("EncodeEvent of a good event: %v", err)
	}
}

// Encoding an event costs a few allocations whatever its raw payload
// holds: proto.Marshal cost two for every object key of the payload.
func TestEncodeEventAllocations(t *testing.T) {
	raw := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for i := range 40 {
		raw.Fields[fmt.Sprintf("key%d", i)] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"inner": structpb.NewStringValue("value"),
		}})
	}
	e := &calsyncv1.CalendarEvent{Id: "e", CalendarId: "c", Provider: "p", Title: "t", Raw: raw}
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := EncodeEvent(e); err != nil {
			t.Fatal(err)
		}
	})
	// The event without its payload, its encoding, the payload's buffer
	// and its growth.
	if allocs > 8 {
		t.Errorf("EncodeEvent of an event whose payload has 80 keys: %.0f allocations, want at most 8", allocs)
	}
}

// An event whose payload arrived as JSON keeps the JSON, and reads back
// as the payload StructFromJSON decodes: for documents of every kind of
// value and nesting, with escapes and bytes that are not UTF-8. The
// event's other fields are checked.
func TestEncodeEventRawJSONKeepsTheJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	docs := []string{
		` {"a":"caf\u00e9 \"q\" \ud83d\ude00","b":"` + "\xff\xfe" + `","a":[1e3,-0,1.5,true,null,{}],"c":{"d":[[]]}}` + "\n",
		`{}`,
	}
	for range 200 {
		s := randomStruct(rng, 4)
		b, err := json.Marshal(s.AsMap())
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	for i, doc := range docs {
		raw, err := model.CheckRawJSON([]byte(doc))
		if err != nil {
			t.Fatalf("doc %d: %v", i, err)
		}
		tree, err := model.StructFromJSON([]byte(doc))
		if err != nil {
			t.Fatalf("doc %d: %v", i, err)
		}
		e := &calsyncv1.CalendarEvent{Id: "e", CalendarId: "c", Provider: "postpress", Title: "t"}
		r, err := EncodeEventRawJSON(e, raw)
		if err != nil {
			t.Fatalf("doc %d: %v", i, err)
		}
		if want := strings.TrimLeft(doc, " \n"); string(r.Raw) != want {
			t.Fatalf("doc %d: raw column %q, want the document %q", i, r.Raw, want)
		}
		back, err := DecodeEvent(r.Data, r.Raw)
		if err != nil {
			t.Fatalf("doc %d: %v", i, err)
		}
		e.Raw = tree
		if !proto.Equal(back, e) {
			t.Fatalf("doc %d: read back %v, want %v", i, back, e)
		}
	}

	e := &calsyncv1.CalendarEvent{Id: "e", CalendarId: "c", Provider: "postpress"}
	if r, err := EncodeEventRawJSON(e, model.RawJSON{}); err != nil || r.Raw != nil {
		t.Errorf("no payload encodes as %q, %v; want none", r.Raw, err)
	}
	raw, err := model.CheckRawJSON([]byte(`{"k":"v"}`))
	if err != nil {
		t.Fatal(err)
	}
	bad := &calsyncv1.CalendarEvent{Id: "e", CalendarId: "c", Provider: "postpress", Location: "\xff"}
	if _, err := EncodeEventRawJSON(bad, raw); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("an event whose location is not UTF-8 encoded with %v; want ErrInvalidArgument", err)
	}
}
