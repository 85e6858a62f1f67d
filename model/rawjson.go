package model

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
)

// StructFromJSON decodes a JSON object into a Struct, the form in which an
// event keeps its provider's raw payload. The result, and the error, are
// exactly those of json.Unmarshal into a map[string]any followed by
// structpb.NewStruct, which is what it replaces: that path decodes every
// value twice (into Go values, then into protobuf values) and was about
// half of normalizing an event. Here, a body that is a plain JSON object
// is decoded once, straight into protobuf values; anything the direct
// decoder does not handle itself (escaped or non-UTF-8 strings are handed
// to encoding/json one string at a time; invalid JSON, deep nesting and
// out-of-range numbers fall back whole) takes the original path, so the
// two never disagree. A null body gives an empty Struct, as NewStruct(nil)
// does.
//
// What it returns, every API encoding carries: encoding/json turns bytes
// that are not UTF-8 into U+FFFD and refuses a number beyond float64, so
// every string is valid UTF-8 and every number finite. It is deterministic: the same bytes give
// equal Structs, which is what lets a store keep the JSON for the Struct.
func StructFromJSON(b []byte) (*structpb.Struct, error) {
	// Every plain string and key is a slice of one copy of the body: one
	// allocation instead of one per string.
	d := rawDecoder{b: b, s: string(b)}
	d.space()
	if d.i < len(d.b) && d.b[d.i] == '{' {
		if s, ok := d.object(0); ok {
			if d.space(); d.i == len(d.b) {
				return s, nil
			}
		}
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return structpb.NewStruct(m)
}

// maxRawDepth bounds the direct decoder's recursion; deeper documents take
// encoding/json's path, which has its own limit.
const maxRawDepth = 512

// rawDecoder is StructFromJSON's direct decoder. Every method reports
// false for input it does not handle, and the caller then falls back.
type rawDecoder struct {
	b []byte
	s string // b as a string
	i int
	// values and strs hand out the payload's values, and the wrappers of
	// its strings (most of its values), a few at a time: one allocation
	// for many instead of two per value. The values of one payload live
	// and die together, with their event.
	values slab[structpb.Value]
	strs   slab[structpb.Value_StringValue]
}

// slab hands out pointers to zero values of T, allocated in chunks that
// grow from slabMin to slabMax elements, so a small payload wastes little.
// Its elements are never copied.
type slab[T any] struct {
	free []T
	next int
}

const slabMin, slabMax = 8, 64

func (s *slab[T]) new() *T {
	if len(s.free) == 0 {
		s.next = min(max(2*s.next, slabMin), slabMax)
		s.free = make([]T, s.next)
	}
	p := &s.free[0]
	s.free = s.free[1:]
	return p
}

func (d *rawDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// object decodes an object starting at '{'.
func (d *rawDecoder) object(depth int) (*structpb.Struct, bool) {
	if depth > maxRawDepth {
		return nil, false
	}
	d.i++ // '{'
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	d.space()
	if d.i < len(d.b) && d.b[d.i] == '}' {
		d.i++
		return s, true
	}
	for {
		d.space()
		if d.i >= len(d.b) || d.b[d.i] != '"' {
			return nil, false
		}
		key, ok := d.str()
		if !ok {
			return nil, false
		}
		d.space()
		if d.i >= len(d.b) || d.b[d.i] != ':' {
			return nil, false
		}
		d.i++
		v, ok := d.value(depth + 1)
		if !ok {
			return nil, false
		}
		// A repeated key keeps its last value, as encoding/json's map does.
		s.Fields[key] = v
		d.space()
		if d.i >= len(d.b) {
			return nil, false
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			return s, true
		default:
			return nil, false
		}
	}
}

// array decodes an array starting at '['.
func (d *rawDecoder) array(depth int) (*structpb.ListValue, bool) {
	if depth > maxRawDepth {
		return nil, false
	}
	d.i++ // '['
	l := &structpb.ListValue{Values: []*structpb.Value{}}
	d.space()
	if d.i < len(d.b) && d.b[d.i] == ']' {
		d.i++
		return l, true
	}
	for {
		v, ok := d.value(depth + 1)
		if !ok {
			return nil, false
		}
		l.Values = append(l.Values, v)
		d.space()
		if d.i >= len(d.b) {
			return nil, false
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			return l, true
		default:
			return nil, false
		}
	}
}

func (d *rawDecoder) value(depth int) (*structpb.Value, bool) {
	d.space()
	if d.i >= len(d.b) {
		return nil, false
	}
	v := d.values.new()
	ok := false
	switch c := d.b[d.i]; {
	case c == '{':
		var s *structpb.Struct
		s, ok = d.object(depth)
		v.Kind = &structpb.Value_StructValue{StructValue: s}
	case c == '[':
		var l *structpb.ListValue
		l, ok = d.array(depth)
		v.Kind = &structpb.Value_ListValue{ListValue: l}
	case c == '"':
		w := d.strs.new()
		w.StringValue, ok = d.str()
		v.Kind = w
	case c == 't':
		v.Kind, ok = &structpb.Value_BoolValue{BoolValue: true}, d.literal("true")
	case c == 'f':
		v.Kind, ok = &structpb.Value_BoolValue{BoolValue: false}, d.literal("false")
	case c == 'n':
		v.Kind, ok = &structpb.Value_NullValue{}, d.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		var f float64
		f, ok = d.number()
		v.Kind = &structpb.Value_NumberValue{NumberValue: f}
	}
	return v, ok
}

func (d *rawDecoder) literal(word string) bool {
	if len(d.b)-d.i < len(word) || string(d.b[d.i:d.i+len(word)]) != word {
		return false
	}
	d.i += len(word)
	return true
}

// str decodes a string starting at '"'. A string with an escape or with
// bytes that are not UTF-8 is decoded by encoding/json, so it gets the
// same unescaping and the same replacement characters.
func (d *rawDecoder) str() (string, bool) {
	start := d.i
	plain, ok := d.strEnd()
	switch {
	case !ok:
		return "", false
	case plain:
		return d.s[start+1 : d.i-1], true
	}
	var s string
	if json.Unmarshal(d.b[start:d.i], &s) != nil {
		return "", false
	}
	return s, true
}

// checkStr is str for a string only checked, not decoded.
func (d *rawDecoder) checkStr() bool {
	start := d.i
	plain, ok := d.strEnd()
	return ok && (plain || json.Valid(d.b[start:d.i]))
}

// strEnd moves past the string starting at '"', reporting whether it is
// plain (no escape, valid UTF-8) and whether it ended before a control
// character or the end of the input.
func (d *rawDecoder) strEnd() (plain, ok bool) {
	start := d.i
	d.i++
	plain, ascii := true, true
	for d.i < len(d.b) {
		c := d.b[d.i]
		if ' ' <= c && c < utf8.RuneSelf && c != '"' && c != '\\' {
			d.i++ // most bytes of most strings
			continue
		}
		switch {
		case c == '"':
			d.i++
			return plain && (ascii || utf8.Valid(d.b[start:d.i])), true
		case c == '\\':
			plain = false
			d.i += 2
		case c < 0x20:
			return false, false
		default:
			ascii = false
			d.i++
		}
	}
	return false, false
}

// number decodes a number that follows JSON's grammar exactly, as a
// float64 the way encoding/json decodes one into an any.
func (d *rawDecoder) number() (float64, bool) {
	start := d.i
	if d.b[d.i] == '-' {
		d.i++
	}
	switch {
	case d.i < len(d.b) && d.b[d.i] == '0':
		d.i++
	case d.i < len(d.b) && '1' <= d.b[d.i] && d.b[d.i] <= '9':
		d.digits()
	default:
		return 0, false
	}
	if d.i < len(d.b) && d.b[d.i] == '.' {
		d.i++
		if d.digits() == 0 {
			return 0, false
		}
	}
	if d.i < len(d.b) && (d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		d.i++
		if d.i < len(d.b) && (d.b[d.i] == '+' || d.b[d.i] == '-') {
			d.i++
		}
		if d.digits() == 0 {
			return 0, false
		}
	}
	f, err := strconv.ParseFloat(string(d.b[start:d.i]), 64)
	if err != nil {
		return 0, false
	}
	return f, true
}

func (d *rawDecoder) digits() int {
	n := 0
	for d.i < len(d.b) && '0' <= d.b[d.i] && d.b[d.i] <= '9' {
		d.i++
		n++
	}
	return n
}
