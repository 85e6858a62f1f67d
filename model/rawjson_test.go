package model_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/calsync/calsync/model"
)

// structTheSlowWay is what StructFromJSON must always agree with.
func structTheSlowWay(b []byte) (*structpb.Struct, error) {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return structpb.NewStruct(m)
}

func checkStructFromJSON(t *testing.T, b []byte) {
	t.Helper()
	got, err := model.StructFromJSON(b)
	want, wantErr := structTheSlowWay(b)
	if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
		t.Fatalf("StructFromJSON(%q) error = %v, want %v", b, err, wantErr)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("StructFromJSON(%q) = %v, want %v", b, got, want)
	}
}

var structFromJSONCases = []string{
	`{}`, ` {"a":1} `, `{"a":{"b":[1,2.5,-3e2,0,-0,1E+2,1e-400,null,true,false,"x",[],{}]}}`,
	`{"a":1,"a":2}`, `{"esc":"quote \" slash \\ nl \n uni \u00e9 \ud83d\ude00 lone \ud800"}`,
	"{\"bad utf8\":\"\xff\xfe\",\"k\xff\":1}", `{"é":"日本"}`, `{"big":1e400}`, `{"lead":01}`,
	`{"frac":1.}`, `{"exp":1e}`, `{"a":1}x`, `{"a":1,}`, `{"a" 1}`, `{"a":tru}`, `null`, `[]`, `"s"`, ``,
	`{"ctl":"a` + "\x01" + `"}`, `{"open":"abc`, `{"a":[1,2}`, `{"a":-}`, `{"a":nul}`,
	`{"d":` + strings.Repeat(`[`, 600) + strings.Repeat(`]`, 600) + `}`,
	`{"d":` + strings.Repeat(`[`, 20000) + strings.Repeat(`]`, 20000) + `}`,
}

// TestStructFromJSONMatchesEncodingJSON: the direct decoder gives exactly
// what json.Unmarshal plus structpb.NewStruct gives, errors included, on
// edge cases and on every provider payload in the golden test data.
func TestStructFromJSONMatchesEncodingJSON(t *testing.T) {
	for _, c := range structFromJSONCases {
		checkStructFromJSON(t, []byte(c))
	}
	for _, p := range providerPayloads(t) {
		checkStructFromJSON(t, p.body)
	}
}

// providerPayload is one file of the providers' golden test data.
type providerPayload struct {
	file string
	body []byte
}

// providerPayloads reads every provider payload in the golden test data.
func providerPayloads(t *testing.T) []providerPayload {
	t.Helper()
	files, _ := filepath.Glob("../provider/*/testdata/*.json")
	if len(files) == 0 {
		t.Fatal("no provider test data found")
	}
	out := make([]providerPayload, 0, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, providerPayload{f, b})
	}
	return out
}

// TestStructFromJSONAllocatesLess: the reason it exists. Decoding through
// map[string]any allocated every value twice.
func TestStructFromJSONAllocatesLess(t *testing.T) {
	b, err := os.ReadFile("../provider/postpress/testdata/recurring_instance.json")
	if err != nil {
		t.Fatal(err)
	}
	slow := testing.AllocsPerRun(50, func() { structTheSlowWay(b) })
	fast := testing.AllocsPerRun(50, func() { model.StructFromJSON(b) })
	if fast > slow*0.7 {
		t.Fatalf("StructFromJSON: %.0f allocations, the map path %.0f; want at most 70%%", fast, slow)
	}
}

func FuzzStructFromJSON(f *testing.F) {
	for _, c := range structFromJSONCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkStructFromJSON(t, b) })
}

// A payload's values are handed out a few at a time: decoding one costs
// well under one allocation per value (it cost two, the value and the
// wrapper of its kind), besides its objects' maps and arrays.
func TestStructFromJSONAllocations(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{`)
	for i := range 40 {
		b.WriteString(`"key` + strconv.Itoa(i) + `": "value ` + strconv.Itoa(i) + `", `)
	}
	b.WriteString(`"n": 1.5, "t": true, "z": null}`)
	body := []byte(b.String())
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := model.StructFromJSON(body); err != nil {
			t.Fatal(err)
		}
	})
	// The body's copy, the Struct, its map (a few growths), the values'
	// chunks and the wrappers of the three values that are not strings.
	if allocs > 20 {
		t.Errorf("StructFromJSON of 43 values: %.0f allocations, want at most 20", allocs)
	}
}
