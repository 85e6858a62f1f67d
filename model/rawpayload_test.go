package model_test

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/calsync/calsync/model"
)

// checkRawJSON: CheckRawJSON keeps exactly what StructFromJSON decodes as
// an object, refuses what it refuses, and keeps a null as no payload.
func checkRawJSON(t *testing.T, b []byte) {
	t.Helper()
	_, err := model.StructFromJSON(b)
	raw, cerr := model.CheckRawJSON(b)
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	switch {
	case err != nil:
		if cerr == nil {
			t.Fatalf("CheckRawJSON took %q, which StructFromJSON refuses (%v)", b, err)
		}
	case len(trimmed) > 0 && trimmed[0] == '{':
		if cerr != nil || !bytes.Equal(raw.Bytes(), trimmed) {
			t.Fatalf("CheckRawJSON(%q) = %q, %v; want the object", b, raw.Bytes(), cerr)
		}
	default: // null
		if cerr != nil || !raw.IsZero() {
			t.Fatalf("CheckRawJSON(%q) = %q, %v; want no payload", b, raw.Bytes(), cerr)
		}
	}
}

// TestCheckRawJSONAgreesWithStructFromJSON on the edge cases and every
// provider payload in the golden test data.
func TestCheckRawJSONAgreesWithStructFromJSON(t *testing.T) {
	cases := append([]string{` {"k":{"a":[1,{"b":"c\u00e9"}]},"k":"last"}` + "\n", `{"x":"\u12"}`, `{"x":"\q"}`},
		structFromJSONCases...)
	for _, c := range cases {
		checkRawJSON(t, []byte(c))
	}
	for _, p := range providerPayloads(t) {
		checkRawJSON(t, p.body)
	}
}

func FuzzCheckRawJSON(f *testing.F) {
	for _, c := range structFromJSONCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkRawJSON(t, b) })
}

// readStruct reads the object at r through JSONReader's methods, as a
// Struct (a key given twice keeps its last value, as StructFromJSON's).
func readStruct(r *model.JSONReader) (*structpb.Struct, bool) {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	ok := r.Object(func(k string, r *model.JSONReader) bool {
		v, ok := readValue(r)
		s.Fields[k] = v
		return ok
	})
	return s, ok
}

func readValue(r *model.JSONReader) (*structpb.Value, bool) {
	if r.IsNull() {
		return structpb.NewNullValue(), true
	}
	if b, ok := r.Bool(); ok {
		return structpb.NewBoolValue(b), true
	}
	if s, ok := r.String(); ok {
		return structpb.NewStringValue(s), true
	}
	if r.IsNumber() {
		f, ok := r.Number()
		return structpb.NewNumberValue(f), ok
	}
	if r.IsObject() {
		s, ok := readStruct(r)
		return structpb.NewStructValue(s), ok
	}
	l := &structpb.ListValue{Values: []*structpb.Value{}}
	ok := r.Array(func(r *model.JSONReader) bool {
		v, ok := readValue(r)
		l.Values = append(l.Values, v)
		return ok
	})
	return structpb.NewListValue(l), ok
}

// checkJSONReader: what ReadJSONObject reads to the end, StructFromJSON
// decodes into what the reader read, and the RawJSON is the document.
func checkJSONReader(t *testing.T, b []byte) {
	t.Helper()
	var got *structpb.Struct
	raw, ok := model.ReadJSONObject(b, func(k string, r *model.JSONReader) bool {
		if got == nil {
			got = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		}
		v, ok := readValue(r)
		got.Fields[k] = v
		return ok
	})
	if !ok {
		return
	}
	if got == nil {
		got = &structpb.Struct{Fields: map[string]*structpb.Value{}}
	}
	want, err := model.StructFromJSON(b)
	if err != nil {
		t.Fatalf("ReadJSONObject read %q, which StructFromJSON refuses: %v", b, err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("ReadJSONObject(%q) read %v; StructFromJSON gives %v", b, got, want)
	}
	if !bytes.Equal(raw.Bytes(), bytes.TrimLeft(b, " \t\r\n")) {
		t.Fatalf("ReadJSONObject kept %q of %q", raw.Bytes(), b)
	}
}

// TestJSONReaderAgreesWithStructFromJSON on the edge cases and every
// provider payload, which it reads to the end; a member left unread fails
// the read.
func TestJSONReaderAgreesWithStructFromJSON(t *testing.T) {
	for _, c := range structFromJSONCases {
		checkJSONReader(t, []byte(c))
	}
	for _, p := range providerPayloads(t) {
		if bytes.HasPrefix(bytes.TrimSpace(p.body), []byte("{")) {
			if _, ok := model.ReadJSONObject(p.body, func(_ string, r *model.JSONReader) bool { return r.Skip() }); !ok {
				t.Errorf("ReadJSONObject refused %s", p.file)
			}
		}
		checkJSONReader(t, p.body)
	}
	if _, ok := model.ReadJSONObject([]byte(`{"a":1,"b":2}`), func(k string, r *model.JSONReader) bool {
		return k == "b" && r.Skip() || k == "a"
	}); ok {
		t.Error("ReadJSONObject accepted a member left unread")
	}
	if _, ok := model.ReadJSONObject([]byte(`{"a":"x"}`), func(_ string, r *model.JSONReader) bool {
		_, isBool := r.Bool()
		s, isString := r.String()
		return !isBool && isString && s == "x"
	}); !ok {
		t.Error("a value of another kind was consumed by the read that refused it")
	}
}

func FuzzJSONReader(f *testing.F) {
	for _, c := range structFromJSONCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkJSONReader(t, b) })
}
