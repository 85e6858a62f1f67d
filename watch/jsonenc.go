package watch

import (
	"errors"
	"math"
	"strconv"
	"sync"
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
	// list and kind are fd's, kept here because the descriptor's methods
	// are interface calls on every field of every message.
	list bool
	kind protoreflect.Kind
}

// messagePlan is how a message type is written: its fields in order, and
// which of them each field number is (for reading the wire encoding).
type messagePlan struct {
	fields []fieldPlan
	// byNumber[n] is the index in fields of field number n, or -1.
	byNumber []int8
}

var plans sync.Map // protoreflect.FullName → *messagePlan, or nil when not supported

// planOf returns the plan of a message type, nil when the encoder leaves
// the type to protojson.
func planOf(md protoreflect.MessageDescriptor) *messagePlan {
	if p, ok := plans.Load(md.FullName()); ok {
		return p.(*messagePlan)
	}
	mp := buildPlan(md)
	plans.Store(md.FullName(), mp)
	return mp
}

// buildPlan plans the kinds of field the API's messages have (strings,
// booleans, enums, messages, and lists of them); a type with any other
// field, a map, a oneof, or more than maxPlanFields fields or a field
// number above maxPlanNumber is left to protojson.
func buildPlan(md protoreflect.MessageDescriptor) *messagePlan {
	fields := md.Fields()
	if md.Oneofs().Len() > 0 || fields.Len() > maxPlanFields {
		return nil
	}
	mp := &messagePlan{fields: make([]fieldPlan, 0, fields.Len())}
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch fd.Kind() {
		case protoreflect.StringKind, protoreflect.BoolKind, protoreflect.EnumKind, protoreflect.MessageKind:
		default:
			return nil
		}
		if fd.IsMap() || fd.Kind() == protoreflect.EnumKind && fd.Enum().FullName() == "google.protobuf.NullValue" || fd.Number() > maxPlanNumber {
			return nil
		}
		key := strconv.AppendQuote(nil, string(fd.Name()))
		mp.fields = append(mp.fields, fieldPlan{fd: fd, key: append(key, ':'), presence: fd.HasPresence(), list: fd.IsList(), kind: fd.Kind()})
		for int(fd.Number()) >= len(mp.byNumber) {
			mp.byNumber = append(mp.byNumber, -1)
		}
		mp.byNumber[fd.Number()] = int8(i)
	}
	return mp
}

// Bounds of the plans, so that a field's index fits an int8 and byNumber
// stays small.
const (
	maxPlanFields = 64
	maxPlanNumber = 1024
)

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
	mp := planOf(md)
	if mp == nil {
		return b, errNotFast
	}
	b = append(b, '{')
	first := true
	var err error
	for i := range mp.fields {
		f := &mp.fields[i]
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
	return appendTimeJSON(b, ts.GetSeconds(), int64(ts.GetNanos()))
}

// appendTimeJSON writes the Timestamp of secs and nanos.
func appendTimeJSON(b []byte, secs, nanos int64) ([]byte, error) {
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos > 999_999_999 {
		return b, errNotFast
	}
	b = append(b, '"')
	b = appendDateTime(b, secs)
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

// appendDateTime writes secs since the Unix epoch, a time in years 1 to
// 9999, as time.Format's "2006-01-02T15:04:05" in UTC, without time's
// general formatting, which a change's dozen timestamps would otherwise
// spend most of their encoding on.
func appendDateTime(b []byte, secs int64) []byte {
	days := secs / 86400
	rem := secs % 86400
	if rem < 0 {
		days--
		rem += 86400
	}
	y, m, d := civilDate(days)
	b = append(b, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-')
	b = append(b, byte('0'+m/10), byte('0'+m%10), '-', byte('0'+d/10), byte('0'+d%10), 'T')
	h, mi, s := rem/3600, rem/60%60, rem%60
	return append(b, byte('0'+h/10), byte('0'+h%10), ':', byte('0'+mi/10), byte('0'+mi%10), ':', byte('0'+s/10), byte('0'+s%10))
}

// civilDate returns the proleptic Gregorian date of days since 1970-01-01
// (H. Hinnant's days-to-civil algorithm).
func civilDate(days int64) (year, month, day int64) {
	z := days + 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097                                  // day of the 400-year era, [0, 146096]
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365 // year of the era, [0, 399]
	doy := doe - (365*yoe + yoe/4 - yoe/100)               // day of the year from March 1, [0, 365]
	mp := (5*doy + 2) / 153                                // month from March, [0, 11]
	day = doy - (153*mp+2)/5 + 1
	month = mp + 3
	if month > 12 {
		month -= 12
	}
	year = yoe + era*400
	if month <= 2 {
		year++
	}
	return year, month, day
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
