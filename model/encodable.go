package model

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ErrNotEncodable is wrapped by [CheckEncodable] for a message that some
// encoding of the API cannot carry.
var ErrNotEncodable = errors.New("cannot be encoded by every API encoding")

// Limits of google.protobuf.Timestamp (0001-01-01T00:00:00Z to
// 9999-12-31T23:59:59.999999999Z) and google.protobuf.Duration (about
// ±10,000 years), as their JSON mappings define them.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
	maxDurationSeconds  = 315576000000
)

// CheckEncodable reports whether m (a calendar, an event, a change) can be
// carried by every encoding the API offers: binary protobuf over gRPC and
// protojson over REST, NDJSON and Server-Sent Events. It refuses, with an
// error naming the field and wrapping [ErrNotEncodable]:
//   - a Timestamp outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z
//     or with nanos outside 0..999,999,999;
//   - a Duration beyond ±10,000 years or with inconsistent nanos;
//   - a string (map keys included) that is not valid UTF-8;
//   - a google.protobuf.Value number that is NaN or infinite.
//
// Whatever it accepts, both encoders encode. The store refuses anything
// else, so one stored object can never end every reader that tries to
// encode it.
func CheckEncodable(m proto.Message) error {
	if m == nil {
		return nil
	}
	return checkMessage(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().Name()))
}

func checkMessage(m protoreflect.Message, path string) error {
	if !m.IsValid() {
		return nil
	}
	switch m.Descriptor().FullName() {
	case "google.protobuf.Timestamp":
		return checkTimestamp(m, path)
	case "google.protobuf.Duration":
		return checkDuration(m, path)
	case "google.protobuf.Value":
		fd := m.Descriptor().Fields().ByName("number_value")
		if m.Has(fd) {
			if f := m.Get(fd).Float(); math.IsNaN(f) || math.IsInf(f, 0) {
				return fmt.Errorf("%s: number %v: %w", path, f, ErrNotEncodable)
			}
		}
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = checkValue(fd, l.Get(i), fmt.Sprintf("%s[%d]", p, i))
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				kp := fmt.Sprintf("%s[%q]", p, k.String())
				if fd.MapKey().Kind() == protoreflect.StringKind && !utf8.ValidString(k.String()) {
					err = fmt.Errorf("%s: key is not valid UTF-8: %w", kp, ErrNotEncodable)
					return false
				}
				err = checkValue(fd.MapValue(), mv, kp)
				return err == nil
			})
		default:
			err = checkValue(fd, v, p)
		}
		return err == nil
	})
	return err
}

func checkValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) error {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if !utf8.ValidString(v.String()) {
			return fmt.Errorf("%s: not valid UTF-8: %w", path, ErrNotEncodable)
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return checkMessage(v.Message(), path)
	}
	return nil
}

// secondsAndNanos reads the two fields Timestamp and Duration share.
func secondsAndNanos(m protoreflect.Message) (int64, int64) {
	fields := m.Descriptor().Fields()
	return m.Get(fields.ByName("seconds")).Int(), m.Get(fields.ByName("nanos")).Int()
}

func checkTimestamp(m protoreflect.Message, path string) error {
	s, n := secondsAndNanos(m)
	if s < minTimestampSeconds || s > maxTimestampSeconds || n < 0 || n > 999_999_999 {
		return fmt.Errorf("%s: timestamp (%d s, %d ns) outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z: %w",
			path, s, n, ErrNotEncodable)
	}
	return nil
}

func checkDuration(m protoreflect.Message, path string) error {
	s, n := secondsAndNanos(m)
	if s < -maxDurationSeconds || s > maxDurationSeconds || n <= -1e9 || n >= 1e9 ||
		(s > 0 && n < 0) || (s < 0 && n > 0) {
		return fmt.Errorf("%s: duration (%d s, %d ns) out of range: %w", path, s, n, ErrNotEncodable)
	}
	return nil
}

// InTimestampRange reports whether t fits a google.protobuf.Timestamp, the
// only way the API carries instants: 0001-01-01T00:00:00Z to
// 9999-12-31T23:59:59.999999999Z.
func InTimestampRange(t time.Time) bool {
	s := t.Unix()
	return s >= minTimestampSeconds && s <= maxTimestampSeconds
}
