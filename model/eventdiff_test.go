package model

import (
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// TestEventChangedFieldsMatchesReflection: the field-by-field comparison
// of events reports what the reflective one reports, over random pairs
// drawn from small sets of values per field (so fields are often equal and
// often not, set and unset, with and without unknown fields). A field
// added to CalendarEvent, Person or Attendee and not compared fails it.
func TestEventChangedFieldsMatchesReflection(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	differed := map[string]int{}
	for i := 0; i < 20000; i++ {
		a, b := &calsyncv1.CalendarEvent{}, &calsyncv1.CalendarEvent{}
		fillRandom(r, a.ProtoReflect(), 0)
		if r.IntN(4) == 0 {
			b = proto.Clone(a).(*calsyncv1.CalendarEvent)
			mutateOneField(r, b.ProtoReflect())
		} else {
			fillRandom(r, b.ProtoReflect(), 0)
		}
		got, want := eventChangedFields(a, b), changedFieldsReflect(a, b)
		if !slices.Equal(got, want) {
			t.Fatalf("eventChangedFields = %v, reflection gives %v\na: %v\nb: %v", got, want, a, b)
		}
		for _, f := range want {
			differed[f]++
		}
	}
	// Every compared field was seen to differ, so none is compared blind.
	fields := (&calsyncv1.CalendarEvent{}).ProtoReflect().Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		name := string(fields.Get(i).Name())
		if !bookkeeping[fields.Get(i).Name()] && differed[name] == 0 {
			t.Errorf("field %s never differed", name)
		}
	}
}

// fillRandom sets each field of m to a value drawn from a small set, or
// leaves it unset.
func fillRandom(r *rand.Rand, m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if r.IntN(3) == 0 {
			continue
		}
		setRandom(r, m, fd, depth)
	}
	if r.IntN(20) == 0 {
		m.SetUnknown(protoreflect.RawFields{0xf8, 0x7f, byte(r.IntN(2))}) // field 2047, varint
	}
}

func setRandom(r *rand.Rand, m protoreflect.Message, fd protoreflect.FieldDescriptor, depth int) {
	switch {
	case fd.IsList():
		l := m.Mutable(fd).List()
		l.Truncate(0)
		for n := r.IntN(3); n > 0; n-- {
			if fd.Message() != nil {
				e := l.NewElement()
				if depth < 2 {
					fillRandom(r, e.Message(), depth+1)
				}
				l.Append(e)
			} else {
				l.Append(randomScalar(r, fd))
			}
		}
	case fd.IsMap():
	case fd.Message() != nil:
		v := m.NewField(fd)
		if depth < 2 && fd.Message().FullName() != "google.protobuf.Struct" {
			fillRandom(r, v.Message(), depth+1)
		}
		m.Set(fd, v)
	default:
		m.Set(fd, randomScalar(r, fd))
	}
}

func randomScalar(r *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	n := r.IntN(3)
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString([]string{"", "a", "b"}[n])
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(n == 1)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(n))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(n))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(n))
	}
	panic("no random values for " + fd.Kind().String())
}

// mutateOneField changes or clears one random field of m.
func mutateOneField(r *rand.Rand, m protoreflect.Message) {
	fields := m.Descriptor().Fields()
	fd := fields.Get(r.IntN(fields.Len()))
	if r.IntN(3) == 0 {
		m.Clear(fd)
		return
	}
	setRandom(r, m, fd, 0)
}

// BenchmarkChangedFields compares two versions of a typical event, one
// field apart, field by field and through reflection.
func BenchmarkChangedFields(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	prev := &calsyncv1.CalendarEvent{}
	for prev.GetOrganizer() == nil || len(prev.GetAttendees()) == 0 || prev.GetStartTime() == nil {
		prev.Reset()
		fillRandom(r, prev.ProtoReflect(), 0)
	}
	next := proto.Clone(prev).(*calsyncv1.CalendarEvent)
	next.Title += " (moved)"
	for _, bc := range []struct {
		name string
		diff func(a, b proto.Message) []string
	}{{"fields", ChangedFields}, {"reflection", changedFieldsReflect}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if len(bc.diff(prev, next)) != 1 {
					b.Fatal("want one changed field")
				}
			}
		})
	}
}
