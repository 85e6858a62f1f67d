package rowcodec

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/google/go-cmp/cmp"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// populate sets every field of m to a value that is not its default, so a
// copy that misses a field differs from it.
func populate(t testing.TB, m protoreflect.Message) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
			t.Fatalf("populate: map field %s not supported", fd.FullName())
		case fd.IsList():
			l := m.Mutable(fd).List()
			if fd.Kind() == protoreflect.MessageKind {
				e := l.NewElement()
				populate(t, e.Message())
				l.Append(e)
			} else {
				l.Append(scalar(t, fd))
			}
		case fd.Kind() == protoreflect.MessageKind:
			sub := m.Mutable(fd).Message()
			if sub.Descriptor().FullName() == "google.protobuf.Struct" {
				// A Struct is a map; one string entry makes it non-empty.
				sub.Interface().(*structpb.Struct).Fields = map[string]*structpb.Value{"k": structpb.NewStringValue("v")}
				continue
			}
			populate(t, sub)
		default:
			m.Set(fd, scalar(t, fd))
		}
	}
}

func scalar(t testing.TB, fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("s-" + string(fd.Name()))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(1)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(7)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(7)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(7)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(7)
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte("b"))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(0.5)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(0.5)
	}
	t.Fatalf("populate: kind %v of %s not supported", fd.Kind(), fd.FullName())
	return protoreflect.Value{}
}

// WithoutRaw keeps every field of an event but its raw payload, including
// fields added to CalendarEvent after it was written.
func TestWithoutRawCopiesEveryField(t *testing.T) {
	e := &calsyncv1.CalendarEvent{}
	populate(t, e.ProtoReflect())
	want := proto.Clone(e).(*calsyncv1.CalendarEvent)
	want.Raw = nil
	got := WithoutRaw(e)
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("WithoutRaw (-want +got):\n%s", diff)
	}
	if e.GetRaw() == nil {
		t.Error("WithoutRaw cleared the raw payload of the event it was given")
	}
}

// The change log keeps every field of a change but its cursor and its
// events' raw payloads, and stamps the commit time, including fields added
// to Change after EncodeChange was written.
func TestEncodeChangeKeepsEveryField(t *testing.T) {
	c := &calsyncv1.Change{}
	populate(t, c.ProtoReflect())
	commit := time.Unix(1_700_000_000, 5).UTC()
	data, err := EncodeChange(c, commit)
	if err != nil {
		t.Fatal(err)
	}
	got := &calsyncv1.Change{}
	if err := proto.Unmarshal(data, got); err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(c).(*calsyncv1.Change)
	want.Cursor = ""
	want.CommitTime.Seconds, want.CommitTime.Nanos = commit.Unix(), int32(commit.Nanosecond())
	want.Event.Raw, want.PreviousEvent.Raw = nil, nil
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("EncodeChange (-want +got):\n%s", diff)
	}
}

// EncodeChangeWith, given the encodings EncodeEvent made of a change's
// events, writes what EncodeChange writes, byte for byte, whichever of the
// events it is given and whichever fields the change has.
func TestEncodeChangeWithMatchesEncodeChange(t *testing.T) {
	full := &calsyncv1.Change{}
	populate(t, full.ProtoReflect())
	full.Calendar, full.PreviousCalendar = nil, nil // an event's change
	commit := time.Unix(1_700_000_000, 5).UTC()
	variants := map[string]func(*calsyncv1.Change){
		"every field":         func(*calsyncv1.Change) {},
		"no previous event":   func(c *calsyncv1.Change) { c.PreviousEvent = nil },
		"no event":            func(c *calsyncv1.Change) { c.Event = nil },
		"no changed fields":   func(c *calsyncv1.Change) { c.ChangedFields = nil },
		"with a calendar too": func(c *calsyncv1.Change) { populate(t, c.ProtoReflect()) },
		"empty events": func(c *calsyncv1.Change) {
			c.Event, c.PreviousEvent = &calsyncv1.CalendarEvent{}, &calsyncv1.CalendarEvent{}
		},
	}
	for name, vary := range variants {
		c := proto.Clone(full).(*calsyncv1.Change)
		vary(c)
		want, err := EncodeChange(c, commit)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		encoded := func(e *calsyncv1.CalendarEvent) []byte {
			if e == nil {
				return nil
			}
			b, err := proto.Marshal(WithoutRaw(e))
			if err != nil {
				t.Fatal(err)
			}
			if b == nil {
				b = []byte{}
			}
			return b
		}
		for _, given := range []struct {
			name            string
			event, previous []byte
		}{
			{"both", encoded(c.Event), encoded(c.PreviousEvent)},
			{"the event", encoded(c.Event), nil},
			{"the previous event", nil, encoded(c.PreviousEvent)},
		} {
			got, err := EncodeChangeWith(c, commit, given.event, given.previous)
			if err != nil {
				t.Fatalf("%s, given %s: %v", name, given.name, err)
			}
			if string(got) != string(want) {
				t.Errorf("%s, given %s: EncodeChangeWith wrote %x, EncodeChange %x", name, given.name, got, want)
			}
		}
	}
}
