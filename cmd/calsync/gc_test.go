package main

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// restoreGC puts the test process's collector settings back afterwards.
func restoreGC(t *testing.T) {
	percent := debug.SetGCPercent(100)
	debug.SetGCPercent(percent)
	limit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
	})
}

func currentGC() (percent int, limit int64) {
	percent = debug.SetGCPercent(100)
	debug.SetGCPercent(percent)
	return percent, debug.SetMemoryLimit(-1)
}

func TestGCSettingsDefaultsAndFlags(t *testing.T) {
	restoreGC(t)
	noEnv := func(string) string { return "" }
	debug.SetGCPercent(100)
	got, err := applyGCSettings(400, "256MiB", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if p, l := currentGC(); p != 400 || l != 256<<20 {
		t.Fatalf("GC percent %d, memory limit %d; want 400, %d", p, l, 256<<20)
	}
	if got.GCPercent != "400" || got.MemoryLimit != "256MiB" {
		t.Fatalf("reported %+v", got)
	}
	if _, err := applyGCSettings(150, "off", noEnv); err != nil {
		t.Fatal(err)
	}
	if p, l := currentGC(); p != 150 || l != math.MaxInt64 {
		t.Fatalf("GC percent %d, memory limit %d; want 150 and none", p, l)
	}
}

// TestGCSettingsEnvironmentWins: GOGC and GOMEMLIMIT, which the runtime
// applies itself, are left alone.
func TestGCSettingsEnvironmentWins(t *testing.T) {
	restoreGC(t)
	debug.SetGCPercent(123)
	debug.SetMemoryLimit(99 << 20)
	env := map[string]string{"GOGC": "123", "GOMEMLIMIT": "99MiB"}
	got, err := applyGCSettings(defaultGCPercent, "1GiB", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if p, l := currentGC(); p != 123 || l != 99<<20 {
		t.Fatalf("GC percent %d, memory limit %d: the environment's settings were overridden", p, l)
	}
	if got.GCPercent != "GOGC=123" || got.MemoryLimit != "GOMEMLIMIT=99MiB" {
		t.Fatalf("reported %+v", got)
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "off": 0, "0": 0, "1024": 1024, "64KiB": 64 << 10, "512MiB": 512 << 20,
		"2GiB": 2 << 30, "1GB": 1e9, " 3 MiB ": 3 << 20, "10B": 10} {
		if got, err := parseByteSize(in); err != nil || got != want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"-1", "1TiB", "lots", "1.5GiB", "MiB", "99999999999GiB"} {
		if _, err := parseByteSize(bad); err == nil {
			t.Errorf("parseByteSize(%q) accepted", bad)
		}
	}
}

// TestServeRejectsBadMemoryLimit: a malformed --memory-limit stops
// serve at startup with a usage error naming the flag.
func TestServeRejectsBadMemoryLimit(t *testing.T) {
	restoreGC(t)
	t.Setenv("GOMEMLIMIT", "")
	code, _, stderr := cli(t, "serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--db", filepath.Join(t.TempDir(), "calsync.db"), "--memory-limit", "lots")
	if code != 2 || !strings.Contains(stderr, "--memory-limit") {
		t.Fatalf("exit %d, stderr %q; want 2 and the flag named", code, stderr)
	}
}

func TestMemoryLimitFromCgroupFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(dir, "missing")
	for _, tt := range []struct {
		files []string
		want  int64
	}{
		{[]string{missing, write("v2", "536870912\n")}, 512 << 20},
		{[]string{write("v2max", "max\n"), write("other", "1024\n")}, 0},
		{[]string{write("v1", "9223372036854771712\n")}, 0},
		{[]string{missing}, 0},
	} {
		if got := memoryLimitIn(tt.files); got != tt.want {
			t.Errorf("memoryLimitIn(%v) = %d, want %d", tt.files, got, tt.want)
		}
	}
}
