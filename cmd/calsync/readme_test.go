package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestREADMEConfigTable keeps the README's configuration table complete:
// every flag of `calsync serve` must have a row naming the flag and its
// environment variable. Run with CALSYNC_PRINT_TABLE=1 to print the rows.
func TestREADMEConfigTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "## Operating calsync")
	if start < 0 {
		t.Fatal(`README.md has no "## Operating calsync" section`)
	}
	section := readme[start:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	rows := map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "| `--") {
			name := strings.TrimPrefix(line, "| `--")
			rows[name[:strings.Index(name, "`")]] = line
		}
	}
	var cfg serveConfig
	fs := newFlagSet()
	cfg.register(fs)
	print := os.Getenv("CALSYNC_PRINT_TABLE") != ""
	fs.VisitAll(func(f *flag.Flag) {
		env := "CALSYNC_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if print {
			def := f.DefValue
			if def == "" {
				def = "(none)"
			}
			fmt.Printf("| `--%s` (`%s`) | `%s` | %s |\n", f.Name, env, def, f.Usage)
		}
		row, ok := rows[f.Name]
		if !ok {
			t.Errorf("README's configuration table has no row for --%s (%s)", f.Name, env)
			return
		}
		if !strings.Contains(row, "`"+env+"`") {
			t.Errorf("README's row for --%s does not name %s", f.Name, env)
		}
	})
	for name := range rows {
		if fs.Lookup(name) == nil {
			t.Errorf("README's configuration table lists --%s, which calsync serve does not have", name)
		}
	}
}
