package watch

import (
	"errors"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// A JSON encoder for the messages REST streams send, for the one set of
// options the REST API uses (proto field names, default values emitted).
//
// protojson does generic work again for every message: it sorts the
// fields, wraps the message to emit defaults and boxes every value. A
// change is encoded once for all REST streams, but once per change is on
// the path of every webhook while a REST watcher is connected. This encoder
// walks a plan of each message type's fields, built once, and writes
// straight into the output.
//
// It gives what protojson gives with those options, as JSON values: the
// same members with the same values, not the same bytes (protojson's
// spacing is deliberately unstable, and nobody may depend on it). Whatever
// it does not handle exactly as protojson does (a field of another kind than
// the API uses, a map, a oneof, another well-known type, an invalid string,
// time or number) it reports as
// errNotFast, and the caller encodes the message with protojson instead,
// which gives the answer or the error protojson gives.

// restJSON is the only MarshalOptions the encoder stands in for.
var restJSON = protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}

// errNotFast means protojson must encode the message.
var errNotFast = errors.New("watch: message left to protojson")

// marshalJSON encodes m as opts asks, through the plan encoder when opts are
// the REST API's.
func marshalJSON(opts protojson.MarshalOptions, m proto.Message) ([]byte, error) {
	if opts == restJSON {
		b, err := appendMessageJSON(make([]byte, 0, 1024), m.ProtoReflect())
		if err == nil {
			return b, nil
		}
	}
	return opts.Marshal(m)
}

// fieldPlan is how one field is written: its name already quoted, with
// the colon.
type fieldPlan struct {
	fd       protoreflect.FieldDescriptor
	key      []byte
	presence bool // written only when set (message fields)
}

var plans sync.Map // protoreflect.FullName → []fieldPlan, or nil when not supported

// planOf returns the plan of a message type, nil when the encoder leaves
// the type to protojson.
func planOf(md protoreflect.MessageDescriptor) []fieldPlan {
	if p, ok := plans.Load(md.FullName()); ok {
		return p.([]fieldPlan)
	}
	fp := buildPlan(md)
	plans.Store(md.FullName(), fp)
	return fp
}

// buildPlan plans the kinds of field the API's messages have (strings,
// booleans, enums, messages, and lists of them); a type with any other
// field, a map or a oneof is left to protojson.
func buildPlan(md protoreflect.MessageDescriptor) []fieldPlan {
	if md.Oneofs().Len() > 0 {
		return nil
	}
	fields := md.Fields()
	fp := make([]fieldPlan, 0, fields.Len())
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch fd.Kind() {
		case protoreflect.StringKind, protoreflect.BoolKind, protoreflect.EnumKind, protoreflect.MessageKind:
		default:
			return nil
		}
		if fd.IsMap() || fd.Kind() == protoreflect.EnumKind && fd.Enum().FullName() == "google.protobuf.NullValue" {
			return nil
		}
		key := strconv.AppendQuote(nil, string(fd.Name()))
		fp = append(fp, fieldPlan{fd: fd, key: append(key, ':'), presence: fd.HasPresence()})
	}
	return fp
}

func appendMessageJSON(b []byte, m protoreflect.Message) ([]byte, error) {
	md := m.Descriptor()
	switch x := m.Interface().(type) {
	case *timestamppb.Timestamp:
		return appendTimestampJSON(b, x)
	case *structpb.Struct:
		return appendStructJSON(b, x)
	}
	if md.ParentFile().Package() == "google.protobuf" {
		return b, errNotFast // other well-known types have JSON forms of their own
	}
	plan := planOf(md)
	if plan == nil {
		return b, errNotFast
	}
	b = append(b, '{')
	first := true
	var err error
	for i := range plan {
		f := &plan[i]
		if f.presence && !m.Has(f.fd) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, f.key...)
		v := m.Get(f.fd)
		if f.fd.IsList() {
			l := v.List()
			b = append(b, '[')
			for j := range l.Len() {
				if j > 0 {
					b = append(b, ',')
				}
				if b, err = appendSingularJSON(b, f.fd, l.Get(j)); err != nil {
					return b, err
				}
			}
			b = append(b, ']')
			continue
		}
		if b, err = appendSingularJSON(b, f.fd, v); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

func appendSingularJSON(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return appendStringJSON(b, v.String())
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), nil
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			b = append(b, '"')
			b = append(b, ev.Name()...)
			return append(b, '"'), nil
		}
		return strconv.AppendInt(b, int64(v.Enum()), 10), nil
	case protoreflect.MessageKind:
		return appendMessageJSON(b, v.Message())
	}
	return b, errNotFast
}

// appendStringJSON writes s as a JSON string, escaping what JSON requires.
// Invalid UTF-8, which protojson refuses, is left to it.
func appendStringJSON(b []byte, s string) ([]byte, error) {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return b, errNotFast
			}
			i += size - 1
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"'), nil
}

const hexDigits = "0123456789abcdef"

// Timestamps as protojson writes them: UTC, RFC 3339, with 0, 3, 6 or 9
// digits of fraction, within years 1 to 9999.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

func appendTimestampJSON(b []byte, ts *timestamppb.Timestamp) ([]byte, error) {
	secs, nanos := ts.GetSeconds(), int64(ts.GetNanos())
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos > 999_999_999 {
		return b, errNotFast
	}
	b = append(b, '"')
	b = time.Unix(secs, 0).UTC().AppendFormat(b, "2006-01-02T15:04:05")
	if nanos != 0 {
		// Nine digits after the point (the leading 1 of 1e9+nanos becomes
		// the point), cut to six or three when the rest are zeros.
		dot := len(b)
		b = strconv.AppendInt(b, nanos+1_000_000_000, 10)
		b[dot] = '.'
		switch {
		case nanos%1_000_000 == 0:
			b = b[:dot+4]
		case nanos%1_000 == 0:
			b = b[:dot+7]
		}
	}
	return append(b, 'Z', '"'), nil
}

func appendStructJSON(b []byte, s *structpb.Struct) ([]byte, error) {
	// protojson orders a map's members by key; JSON objects have no order,
	// and a Struct's keys are unique, so they go out as the map gives them.
	b = append(b, '{')
	first := true
	var err error
	for k, v := range s.GetFields() {
		if !first {
			b = append(b, ',')
		}
		first = false
		if b, err = appendStringJSON(b, k); err != nil {
			return b, err
		}
		b = append(b, ':')
		if b, err = appendValueJSON(b, v); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

func appendValueJSON(b []byte, v *structpb.Value) ([]byte, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return append(b, "null"...), nil
	case *structpb.Value_NumberValue:
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			return b, errNotFast
		}
		return strconv.AppendFloat(b, k.NumberValue, 'g', -1, 64), nil
	case *structpb.Value_StringValue:
		return appendStringJSON(b, k.StringValue)
	case *structpb.Value_BoolValue:
		return strconv.AppendBool(b, k.BoolValue), nil
	case *structpb.Value_StructValue:
		return appendStructJSON(b, k.StructValue)
	case *structpb.Value_ListValue:
		b = append(b, '[')
		var err error
		for i, e := range k.ListValue.GetValues() {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendValueJSON(b, e); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	}
	return b, errNotFast // no kind set: protojson's error
}
