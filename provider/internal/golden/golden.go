// Package golden compares normalized protos with expected files in a
// test's testdata directory, so a change in normalization shows up as a
// readable diff in review. Run tests with -update to rewrite the files.
package golden

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var update = flag.Bool("update", false, "rewrite golden files with the current output")

// Marshal returns m as multi-line protojson with stable formatting:
// protojson deliberately varies its whitespace, so the output is compacted
// and indented again.
func Marshal(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		tb.Fatalf("protojson: %v", err)
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		tb.Fatalf("compact: %v", err)
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		tb.Fatalf("indent: %v", err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

// Assert compares m with the golden file path (or rewrites it with
// -update).
func Assert(tb testing.TB, path string, m proto.Message) {
	tb.Helper()
	got := Marshal(tb, m)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			tb.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		tb.Errorf("%s differs (run with -update to accept):\n%s", path, lineDiff(string(want), string(got)))
	}
}

// Inputs returns the testdata/*.json files that are not golden files.
func Inputs(tb testing.TB) []string {
	tb.Helper()
	all, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var in []string
	for _, f := range all {
		if !strings.HasSuffix(f, ".golden.json") {
			in = append(in, f)
		}
	}
	if len(in) == 0 {
		tb.Fatal("no testdata/*.json inputs")
	}
	return in
}

// PathFor returns the golden file of an input file.
func PathFor(input string) string {
	return strings.TrimSuffix(input, ".json") + ".golden.json"
}

// lineDiff is a small line-oriented diff: enough to spot what changed.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("- " + wl + "\n+ " + gl + "\n")
		}
	}
	return b.String()
}
