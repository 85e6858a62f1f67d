package model

import "bytes"

// RawJSON is a raw payload kept as the JSON object it arrived as: one that
// StructFromJSON decodes, so the payload read back from it is one every
// API encoding carries (see StructFromJSON). Only this package makes one,
// from bytes it has checked; the zero RawJSON holds no payload. Its bytes
// must not be modified.
type RawJSON struct{ doc []byte }

// Bytes returns the JSON object, which starts with '{'; nil for the zero
// RawJSON.
func (r RawJSON) Bytes() []byte { return r.doc }

// IsZero reports whether r holds no payload.
func (r RawJSON) IsZero() bool { return r.doc == nil }

// CheckRawJSON returns b as a RawJSON when it is a JSON object that
// StructFromJSON decodes, the zero RawJSON for a JSON null (no payload),
// and StructFromJSON's error otherwise. It only checks b, without
// decoding it, where StructFromJSON's direct decoder would take it on.
func CheckRawJSON(b []byte) (RawJSON, error) {
	doc := bytes.TrimLeft(b, " \t\r\n")
	if !checkObject(b) {
		if _, err := StructFromJSON(b); err != nil {
			return RawJSON{}, err
		}
		if len(doc) == 0 || doc[0] != '{' {
			return RawJSON{}, nil // null: an empty Struct, but no payload
		}
	}
	return RawJSON{doc: doc}, nil
}

// checkObject reports whether b is a JSON object StructFromJSON's direct
// decoder takes on, checking it without decoding it.
func checkObject(b []byte) bool {
	d := &rawDecoder{b: b}
	d.space()
	if d.i >= len(d.b) || d.b[d.i] != '{' || !d.skip(0) {
		return false
	}
	d.space()
	return d.i == len(d.b)
}

// skip checks the value at d.i, as value decodes it, and moves past it.
func (d *rawDecoder) skip(depth int) bool {
	d.space()
	if d.i >= len(d.b) {
		return false
	}
	switch c := d.b[d.i]; {
	case c == '{', c == '[':
		return depth <= maxRawDepth && d.skipItems(depth)
	case c == '"':
		return d.checkStr()
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		_, ok := d.number()
		return ok
	}
	return false
}

// skipItems checks the object or array at d.i, as object and array decode
// them, and moves past it.
func (d *rawDecoder) skipItems(depth int) bool {
	return d.walkItems(
		func() (string, bool) { return "", d.checkStr() },
		func(string) bool { return d.skip(depth + 1) })
}

// walkItems walks the object or array at d.i with the grammar object and
// array decode: for an object, key reads each key (at its opening quote);
// item is called at each member's or element's value, which it must move
// past.
func (d *rawDecoder) walkItems(key func() (string, bool), item func(key string) bool) bool {
	object := d.b[d.i] == '{'
	closing := byte(']')
	if object {
		closing = '}'
	}
	d.i++
	d.space()
	if d.i < len(d.b) && d.b[d.i] == closing {
		d.i++
		return true
	}
	for {
		var k string
		if object {
			d.space()
			if d.i >= len(d.b) || d.b[d.i] != '"' {
				return false
			}
			var ok bool
			if k, ok = key(); !ok {
				return false
			}
			d.space()
			if d.i >= len(d.b) || d.b[d.i] != ':' {
				return false
			}
			d.i++
		}
		if !item(k) {
			return false
		}
		d.space()
		if d.i >= len(d.b) {
			return false
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case closing:
			d.i++
			return true
		default:
			return false
		}
	}
}
