package watch

import (
	"strconv"
	"sync"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// JSON straight from a change's protobuf frame.
//
// A change reaches the hub already encoded (the store's bytes, framed for
// gRPC streams), and REST streams want it as JSON. Decoding the frame into
// a message only to walk that message by reflection cost more than twice
// what reading the encoding does. appendWireJSON reads the encoding in
// place, with the same plans as appendMessageJSON, and writes what
// appendMessageJSON writes for the decoded message (the same members with
// the same values).
//
// What the decode would treat in a way of its own is left to it, as
// errNotFast: a message field that occurs twice (the decode merges the
// two), a known field with another wire type than its kind's, a packed
// list, invalid UTF-8 (the decode refuses it), a Struct or another
// well-known type but Timestamp, bytes that do not parse, and whatever
// appendMessageJSON leaves to protojson. Unknown fields are skipped, as
// the decode keeps them and protojson ignores them. A singular scalar that
// occurs twice takes its last value, as in the decode.

// wireField is one occurrence of a planned field in an encoding.
type wireField struct {
	field int8           // index in the plan
	typ   protowire.Type // VarintType or BytesType
	v     uint64         // the varint's value
	start int32          // the bytes' span, for BytesType
	end   int32
}

// wireEncoder writes JSON from encodings. Its occurrence lists are stacks
// shared by the nested messages of one encoding, so that no message zeroes
// arrays of its own; one encoder serves encoding after encoding.
type wireEncoder struct {
	out []byte
	// occ holds the planned fields' occurrences of the messages being
	// written, outermost first; last, for each of their fields, the index
	// of its last occurrence from the message's first, plus one (0: none).
	occ  []wireField
	last []int32
}

// wireEncoders keep encoders, and with them buffers that have grown to
// fit the changes seen, up to maxWireBuffer bytes of JSON and
// maxWireFields occurrences.
var wireEncoders = sync.Pool{New: func() any { return &wireEncoder{out: make([]byte, 0, 4096)} }}

const (
	maxWireBuffer = 64 << 10
	maxWireFields = 4096
)

// appendWireJSON appends to b the message of type md encoded as data.
func appendWireJSON(b []byte, md protoreflect.MessageDescriptor, data []byte) ([]byte, error) {
	w := wireEncoders.Get().(*wireEncoder)
	defer func() {
		if cap(w.out) > maxWireBuffer || cap(w.occ) > maxWireFields || cap(w.last) > maxWireFields {
			*w = wireEncoder{}
		}
		wireEncoders.Put(w)
	}()
	w.out, w.occ, w.last = w.out[:0], w.occ[:0], w.last[:0]
	if err := w.message(md, data); err != nil {
		return b, err
	}
	return append(b, w.out...), nil
}

func (w *wireEncoder) message(md protoreflect.MessageDescriptor, data []byte) error {
	if md.FullName() == "google.protobuf.Timestamp" {
		var err error
		w.out, err = appendWireTimestampJSON(w.out, data)
		return err
	}
	if md.ParentFile().Package() == "google.protobuf" {
		return errNotFast
	}
	mp := planOf(md)
	if mp == nil || len(data) > 1<<31-1 {
		return errNotFast
	}
	base, lbase := len(w.occ), len(w.last)
	for range mp.fields {
		w.last = append(w.last, 0)
	}
	last := w.last[lbase:]
	for off := 0; off < len(data); {
		num, typ, n := protowire.ConsumeTag(data[off:])
		if n < 0 {
			return errNotFast
		}
		off += n
		idx := int8(-1)
		if int(num) < len(mp.byNumber) {
			idx = mp.byNumber[num]
		}
		if idx < 0 {
			n = protowire.ConsumeFieldValue(num, typ, data[off:])
			if n < 0 {
				return errNotFast
			}
			off += n
			continue
		}
		f := &mp.fields[idx]
		k := f.kind
		o := wireField{field: idx, typ: typ}
		switch typ {
		case protowire.VarintType:
			if k != protoreflect.BoolKind && k != protoreflect.EnumKind {
				return errNotFast
			}
			o.v, n = protowire.ConsumeVarint(data[off:])
		case protowire.BytesType:
			if k != protoreflect.StringKind && k != protoreflect.MessageKind {
				return errNotFast // a packed list of bools or enums, which the API has none of
			}
			var v []byte
			v, n = protowire.ConsumeBytes(data[off:])
			if k == protoreflect.StringKind && n >= 0 && !utf8.Valid(v) {
				return errNotFast // the decode refuses it, even if a later value replaces it
			}
			o.start = int32(off + n - len(v))
			o.end = int32(off + n)
		default:
			return errNotFast
		}
		if n < 0 {
			return errNotFast
		}
		off += n
		if !f.list && last[idx] != 0 && k == protoreflect.MessageKind {
			return errNotFast // the decode would merge the two
		}
		w.occ = append(w.occ, o)
		last[idx] = int32(len(w.occ) - base)
	}
	end := len(w.occ)

	w.out = append(w.out, '{')
	first := true
	for i := range mp.fields {
		f := &mp.fields[i]
		// Nested messages grow w.last past this message's part and may
		// move it: read it through w.last.
		at := w.last[lbase+i]
		if !f.list && at == 0 && f.presence {
			continue
		}
		if !first {
			w.out = append(w.out, ',')
		}
		first = false
		w.out = append(w.out, f.key...)
		switch {
		case f.list:
			w.out = append(w.out, '[')
			none := true
			for j := base; j < end; j++ {
				o := w.occ[j]
				if int(o.field) != i {
					continue
				}
				if !none {
					w.out = append(w.out, ',')
				}
				none = false
				if err := w.singular(f, data, o); err != nil {
					return err
				}
			}
			w.out = append(w.out, ']')
		case at == 0:
			w.out = appendDefaultJSON(w.out, f)
		default:
			if err := w.singular(f, data, w.occ[base+int(at)-1]); err != nil {
				return err
			}
		}
	}
	w.out = append(w.out, '}')
	w.occ, w.last = w.occ[:base], w.last[:lbase]
	return nil
}

func (w *wireEncoder) singular(f *fieldPlan, data []byte, o wireField) error {
	var err error
	switch f.kind {
	case protoreflect.StringKind:
		if o.typ != protowire.BytesType {
			return errNotFast
		}
		w.out, err = appendStringJSON(w.out, bytesAsString(data[o.start:o.end]))
		return err
	case protoreflect.MessageKind:
		if o.typ != protowire.BytesType {
			return errNotFast
		}
		return w.message(f.fd.Message(), data[o.start:o.end])
	}
	if o.typ != protowire.VarintType {
		return errNotFast
	}
	w.out = appendVarintJSON(w.out, f, o.v)
	return nil
}

// appendVarintJSON writes a bool or enum value as the decode reads it.
func appendVarintJSON(b []byte, f *fieldPlan, v uint64) []byte {
	if f.kind == protoreflect.BoolKind {
		return strconv.AppendBool(b, protowire.DecodeBool(v))
	}
	return appendEnumJSON(b, f.fd, protoreflect.EnumNumber(int32(v)))
}

func appendEnumJSON(b []byte, fd protoreflect.FieldDescriptor, n protoreflect.EnumNumber) []byte {
	if ev := fd.Enum().Values().ByNumber(n); ev != nil {
		b = append(b, '"')
		b = append(b, ev.Name()...)
		return append(b, '"')
	}
	return strconv.AppendInt(b, int64(n), 10)
}

// appendDefaultJSON writes the value of a scalar field the encoding lacks.
func appendDefaultJSON(b []byte, f *fieldPlan) []byte {
	fd := f.fd
	switch f.kind {
	case protoreflect.StringKind:
		return append(b, '"', '"')
	case protoreflect.BoolKind:
		return append(b, "false"...)
	}
	return appendEnumJSON(b, fd, fd.Default().Enum())
}

// appendWireTimestampJSON writes an encoded google.protobuf.Timestamp.
func appendWireTimestampJSON(b []byte, data []byte) ([]byte, error) {
	var secs, nanos int64
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return b, errNotFast
		}
		data = data[n:]
		if (num == 1 || num == 2) && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return b, errNotFast
			}
			data = data[n:]
			if num == 1 {
				secs = int64(v)
			} else {
				nanos = int64(int32(v))
			}
			continue
		}
		if num == 1 || num == 2 {
			return b, errNotFast
		}
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return b, errNotFast
		}
		data = data[n:]
	}
	return appendTimeJSON(b, secs, nanos)
}

// bytesAsString views b as a string without copying it: the frames it is
// read from are never modified.
func bytesAsString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
