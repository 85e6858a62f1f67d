package model

// JSONReader reads a JSON document in one pass, a value at a time, with
// StructFromJSON's direct decoder: strings are decoded as StructFromJSON
// decodes them, and a document it reads to the end is one StructFromJSON
// decodes. It lets a provider read the fields it needs straight from a
// body it keeps as the raw payload, without building the payload.
//
// Each method reads the value at the reader's position, of the kind it is
// named after, and moves past it. One that finds another kind reports
// false and reads nothing, so another may be tried; one that finds input
// StructFromJSON's direct decoder would not take on reports false and
// leaves the reader unusable (the caller then falls back to
// StructFromJSON). A member or element left unread fails the read.
type JSONReader struct {
	d     rawDecoder
	depth int
	bad   bool
}

// ReadJSONObject reads b, which must be a JSON object, calling member with
// each member's key (in document order: a key given twice is given twice)
// and the reader positioned at its value, which member must read (or
// Skip). It returns b as a RawJSON when b was read to its end and every
// member call reported true.
func ReadJSONObject(b []byte, member func(key string, r *JSONReader) bool) (RawJSON, bool) {
	r := &JSONReader{d: rawDecoder{b: b, s: string(b)}}
	r.d.space()
	start := r.d.i
	if !r.Object(member) {
		return RawJSON{}, false
	}
	if r.d.space(); r.d.i != len(r.d.b) {
		return RawJSON{}, false
	}
	return RawJSON{doc: b[start:]}, true
}

// peek is the first byte of the value at the reader's position.
func (r *JSONReader) peek() byte {
	if r.bad {
		return 0
	}
	r.d.space()
	if r.d.i >= len(r.d.b) {
		return 0
	}
	return r.d.b[r.d.i]
}

// fail marks the reader unusable and reports false.
func (r *JSONReader) fail() bool {
	r.bad = true
	return false
}

// IsNull reports whether the value at the reader is null, reading it if
// it is.
func (r *JSONReader) IsNull() bool {
	if r.peek() != 'n' {
		return false
	}
	if !r.d.literal("null") {
		r.fail()
		return false
	}
	return true
}

// IsObject reports whether the value at the reader is an object, without
// reading it.
func (r *JSONReader) IsObject() bool { return r.peek() == '{' }

// IsNumber reports whether the value at the reader is a number, without
// reading it.
func (r *JSONReader) IsNumber() bool {
	c := r.peek()
	return c == '-' || ('0' <= c && c <= '9')
}

// Number reads a number, as a float64 the way StructFromJSON decodes it.
func (r *JSONReader) Number() (float64, bool) {
	if !r.IsNumber() {
		return 0, false
	}
	f, ok := r.d.number()
	if !ok {
		return 0, r.fail()
	}
	return f, true
}

// String reads a string.
func (r *JSONReader) String() (string, bool) {
	if r.peek() != '"' {
		return "", false
	}
	s, ok := r.d.str()
	if !ok {
		return "", r.fail()
	}
	return s, true
}

// Bool reads true or false.
func (r *JSONReader) Bool() (bool, bool) {
	switch r.peek() {
	case 't':
		return true, r.d.literal("true") || r.fail()
	case 'f':
		return false, r.d.literal("false") || r.fail()
	}
	return false, false
}

// Skip reads a value of any kind.
func (r *JSONReader) Skip() bool {
	if r.peek() == 0 || !r.d.skip(r.depth) {
		return r.fail()
	}
	return true
}

// Object reads an object, calling member as ReadJSONObject does.
func (r *JSONReader) Object(member func(key string, r *JSONReader) bool) bool {
	if r.peek() != '{' {
		return false
	}
	return r.items(func(key string) bool { return member(key, r) })
}

// Array reads an array, calling elem with the reader positioned at each
// element, which elem must read.
func (r *JSONReader) Array(elem func(r *JSONReader) bool) bool {
	if r.peek() != '[' {
		return false
	}
	return r.items(func(string) bool { return elem(r) })
}

// items reads the members or elements of the object or array at the
// reader, as skipItems checks them, handing each to item.
func (r *JSONReader) items(item func(key string) bool) bool {
	if r.depth > maxRawDepth {
		return r.fail()
	}
	r.depth++
	defer func() { r.depth-- }()
	d := &r.d
	ok := d.walkItems(d.str, func(key string) bool {
		d.space()
		at := d.i
		// An item that read nothing would leave its value to be taken
		// for the next key.
		return item(key) && !r.bad && d.i != at
	})
	return ok || r.fail()
}
