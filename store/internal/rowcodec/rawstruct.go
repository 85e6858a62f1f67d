package rowcodec

import (
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"
)

// Field tags of google.protobuf.Struct, Value and ListValue, and of a map
// entry, as they appear on the wire.
const (
	tagStructFields = 1<<3 | byte(protowire.BytesType) // Struct.fields, one entry each
	tagEntryKey     = 1<<3 | byte(protowire.BytesType)
	tagEntryValue   = 2<<3 | byte(protowire.BytesType)
	tagNull         = 1<<3 | byte(protowire.VarintType)
	tagNumber       = 2<<3 | byte(protowire.Fixed64Type)
	tagString       = 3<<3 | byte(protowire.BytesType)
	tagBool         = 4<<3 | byte(protowire.VarintType)
	tagStruct       = 5<<3 | byte(protowire.BytesType)
	tagList         = 6<<3 | byte(protowire.BytesType)
	tagListValues   = 1<<3 | byte(protowire.BytesType)
)

// rawEncoder encodes a google.protobuf.Struct (a raw payload) in protobuf's
// binary format, walking its Go values directly. proto.Marshal goes
// through reflection for the Struct's maps, which costs two allocations per
// object key (one when sizing, one when writing) and was most of encoding
// an event. The bytes are those proto.Marshal writes, map entries in map
// order (as marshalEvent leaves them), so proto.Unmarshal reads the same
// Struct back.
//
// It notes, as it goes, what some encoding cannot carry: a string or key
// that is not valid UTF-8 (which proto.Marshal refuses too), and a number
// that is NaN or infinite (which protojson refuses; see
// [model.CheckEncodable]).
type rawEncoder struct {
	badUTF8   bool
	nonFinite bool
}

// appendStruct appends the encoding of s's fields (s may be nil).
func (e *rawEncoder) appendStruct(b []byte, s *structpb.Struct) []byte {
	for k, v := range s.GetFields() {
		if !utf8.ValidString(k) {
			e.badUTF8 = true
		}
		b = append(b, tagStructFields)
		entry := len(b)
		b = append(b, 0)
		// Like proto.Marshal, a map entry always carries its key and value.
		b = append(b, tagEntryKey)
		b = protowire.AppendString(b, k)
		b = append(b, tagEntryValue)
		val := len(b)
		b = append(b, 0)
		b = e.appendValue(b, v)
		b = fixLength(b, val)
		b = fixLength(b, entry)
	}
	return b
}

// appendValue appends the encoding of v's fields (v may be nil, which
// encodes as an empty Value).
func (e *rawEncoder) appendValue(b []byte, v *structpb.Value) []byte {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		b = append(b, tagNull)
		b = protowire.AppendVarint(b, uint64(int64(k.NullValue)))
	case *structpb.Value_NumberValue:
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			e.nonFinite = true
		}
		b = append(b, tagNumber)
		b = protowire.AppendFixed64(b, math.Float64bits(k.NumberValue))
	case *structpb.Value_StringValue:
		if !utf8.ValidString(k.StringValue) {
			e.badUTF8 = true
		}
		b = append(b, tagString)
		b = protowire.AppendString(b, k.StringValue)
	case *structpb.Value_BoolValue:
		b = append(b, tagBool)
		b = protowire.AppendVarint(b, protowire.EncodeBool(k.BoolValue))
	case *structpb.Value_StructValue:
		b = append(b, tagStruct)
		at := len(b)
		b = append(b, 0)
		b = e.appendStruct(b, k.StructValue)
		b = fixLength(b, at)
	case *structpb.Value_ListValue:
		b = append(b, tagList)
		at := len(b)
		b = append(b, 0)
		for _, item := range k.ListValue.GetValues() {
			b = append(b, tagListValues)
			itemAt := len(b)
			b = append(b, 0)
			b = e.appendValue(b, item)
			b = fixLength(b, itemAt)
		}
		b = fixLength(b, at)
	}
	return b
}

// fixLength writes the length of b[at+1:] as the varint at b[at], where
// one byte was reserved for it, moving what follows when the length needs
// more than that byte. Nested messages are written once, and only those
// of 128 bytes or more are moved, once per level they are nested in.
func fixLength(b []byte, at int) []byte {
	n := len(b) - at - 1
	size := protowire.SizeVarint(uint64(n))
	if size == 1 {
		b[at] = byte(n)
		return b
	}
	end := len(b)
	for range size - 1 {
		b = append(b, 0)
	}
	copy(b[at+size:], b[at+1:end])
	protowire.AppendVarint(b[at:at], uint64(n))
	return b
}

// rawBufferSize is the capacity a raw payload's encoding starts with: a
// webhook's payload usually fits, and a larger one grows it by appending.
// Sizing the payload first, which walks every map of it once more, cost as
// much as writing it.
const rawBufferSize = 512
