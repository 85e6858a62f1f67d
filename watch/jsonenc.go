package watch

import (
	"encoding/base64"
	"errors"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
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
// it does not handle exactly as protojson does (a map, a oneof, another
// well-known type, an invalid string, time or number) it reports as
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

func planOf(md protoreflect.MessageDescriptor) ([]fieldPlan, bool) {
	if p, ok := plans.Load(md.FullName()); ok {
		fp, _ := p.([]fieldPlan)
		return fp, fp != nil
	}
	fp := buildPlan(md)
	plans.Store(md.FullName(), fp)
	return fp, fp != nil
}

func buildPlan(md protoreflect.MessageDescriptor) []fieldPlan {
	if md.Oneofs().Len() > 0 {
		return nil
	}
	fields := md.Fields()
	fp := make([]fieldPlan, 0, fields.Len())
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.IsMap() || fd.IsExtension() || fd.Kind() == protoreflect.GroupKind {
			return nil
		}
		key := strconv.AppendQuote(nil, string(fd.Name()))
		fp = append(fp, fieldPlan{fd: fd, key: append(key, ':'), presence: fd.HasPresence()})
	}
	return fp
}

func appendMessageJSON(b []byte, m protoreflect.Message) ([]byte, error) {
	md := m.Descriptor()
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		return appendTimestampJSON(b, m)
	case "google.protobuf.Struct":
		return appendStructJSON(b, m)
	case "google.protobuf.Value":
		return appendValueJSON(b, m)
	case "google.protobuf.ListValue":
		return appendListJSON(b, m)
	}
	if md.ParentFile().Package() == "google.protobuf" {
		return b, errNotFast // other well-known types have JSON forms of their own
	}
	plan, ok := planOf(md)
	if !ok {
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
		if fd.Enum().FullName() == "google.protobuf.NullValue" {
			return append(b, "null"...), nil
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			b = append(b, '"')
			b = append(b, ev.Name()...)
			return append(b, '"'), nil
		}
		return strconv.AppendInt(b, int64(v.Enum()), 10), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return strconv.AppendInt(b, v.Int(), 10), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return strconv.AppendUint(b, v.Uint(), 10), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		b = append(b, '"')
		b = strconv.AppendInt(b, v.Int(), 10)
		return append(b, '"'), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		b = append(b, '"')
		b = strconv.AppendUint(b, v.Uint(), 10)
		return append(b, '"'), nil
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return b, errNotFast
		}
		return strconv.AppendFloat(b, f, 'g', -1, 64), nil
	case protoreflect.BytesKind:
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, v.Bytes())
		return append(b, '"'), nil
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

func appendTimestampJSON(b []byte, m protoreflect.Message) ([]byte, error) {
	fields := m.Descriptor().Fields()
	secs := m.Get(fields.ByName("seconds")).Int()
	nanos := m.Get(fields.ByName("nanos")).Int()
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos > 999_999_999 {
		return b, errNotFast
	}
	b = append(b, '"')
	b = time.Unix(secs, 0).UTC().AppendFormat(b, "2006-01-02T15:04:05")
	if nanos != 0 {
		frac := strconv.AppendInt(nil, nanos+1_000_000_000, 10)[1:] // nine digits
		switch {
		case nanos%1_000_000 == 0:
			frac = frac[:3]
		case nanos%1_000 == 0:
			frac = frac[:6]
		}
		b = append(b, '.')
		b = append(b, frac...)
	}
	return append(b, 'Z', '"'), nil
}

func appendStructJSON(b []byte, m protoreflect.Message) ([]byte, error) {
	fields := m.Get(m.Descriptor().Fields().ByName("fields")).Map()
	// protojson orders a map's members by key; JSON objects have no order,
	// and a Struct's keys are unique, so they go out as the map gives them.
	b = append(b, '{')
	first := true
	var err error
	fields.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		if !first {
			b = append(b, ',')
		}
		first = false
		if b, err = appendStringJSON(b, k.String()); err != nil {
			return false
		}
		b = append(b, ':')
		b, err = appendValueJSON(b, v.Message())
		return err == nil
	})
	if err != nil {
		return b, err
	}
	return append(b, '}'), nil
}

func appendValueJSON(b []byte, m protoreflect.Message) ([]byte, error) {
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("kind"))
	if fd == nil {
		return b, errNotFast // no kind set: protojson's error
	}
	v := m.Get(fd)
	switch fd.Name() {
	case "null_value":
		return append(b, "null"...), nil
	case "number_value":
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return b, errNotFast
		}
		return strconv.AppendFloat(b, f, 'g', -1, 64), nil
	case "string_value":
		return appendStringJSON(b, v.String())
	case "bool_value":
		return strconv.AppendBool(b, v.Bool()), nil
	case "struct_value":
		return appendStructJSON(b, v.Message())
	case "list_value":
		return appendListJSON(b, v.Message())
	}
	return b, errNotFast
}

func appendListJSON(b []byte, m protoreflect.Message) ([]byte, error) {
	l := m.Get(m.Descriptor().Fields().ByName("values")).List()
	b = append(b, '[')
	var err error
	for i := range l.Len() {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendValueJSON(b, l.Get(i).Message()); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}
