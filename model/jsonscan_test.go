package model_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

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
	tree, sraw, serr := model.StructAndRawJSON(b)
	if (serr == nil) != (err == nil) || !bytes.Equal(sraw.Bytes(), raw.Bytes()) || (err == nil && tree == nil) {
		t.Fatalf("StructAndRawJSON(%q) = %v, %q, %v; CheckRawJSON %q", b, tree, sraw.Bytes(), serr, raw.Bytes())
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
	files, _ := filepath.Glob("../provider/*/testdata/*.json")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		checkRawJSON(t, b)
	}
}

func FuzzCheckRawJSON(f *testing.F) {
	for _, c := range structFromJSONCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkRawJSON(t, b) })
}
