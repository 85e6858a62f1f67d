package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// defaultGCPercent is the server's garbage collection target (GOGC) when
// the GOGC environment variable is not set: Go's own default. A webhook
// allocates about 19 KB, garbage once it is answered; a higher target
// cuts the collector's own CPU (the intake benchmark's gc-µs per webhook
// fell from about 26 to 5-14 at 400), but end-to-end runs showed no gain
// in server CPU per webhook and 15-20 MB more RSS under load
// (BENCHMARKS.md, "Garbage collection"), so the default stays and the
// flag lets an operator with memory to spare trade it.
const defaultGCPercent = 100

// memoryLimitShare is the part of the container's memory limit the Go
// heap's soft limit is set to by default, leaving room for SQLite's page
// cache and the runtime's own overhead.
const memoryLimitShare = 0.8

// gcSettings is what applyGCSettings set, for the startup log.
type gcSettings struct {
	GCPercent   string
	MemoryLimit string
}

// applyGCSettings sets the garbage collector's target and soft memory
// limit, unless the GOGC and GOMEMLIMIT environment variables (which the
// runtime has already applied) set them. gcPercent < 0 turns collection
// off until the memory limit is reached. memoryLimit is a size such as
// "512MiB"; empty derives one from the container's (cgroup) memory limit,
// and "0" or "off" means no limit.
func applyGCSettings(gcPercent int, memoryLimit string, getenv func(string) string) (gcSettings, error) {
	var s gcSettings
	if v := getenv("GOGC"); v != "" {
		s.GCPercent = "GOGC=" + v
	} else {
		debug.SetGCPercent(gcPercent)
		s.GCPercent = strconv.Itoa(gcPercent)
		if gcPercent < 0 {
			s.GCPercent = "off"
		}
	}
	if v := getenv("GOMEMLIMIT"); v != "" {
		s.MemoryLimit = "GOMEMLIMIT=" + v
		return s, nil
	}
	limit, err := parseByteSize(memoryLimit)
	if err != nil {
		return s, fmt.Errorf("--memory-limit: %w", err)
	}
	if strings.TrimSpace(memoryLimit) == "" {
		if cg := cgroupMemoryLimit(); cg > 0 {
			limit = int64(float64(cg) * memoryLimitShare)
		}
	}
	if limit <= 0 {
		debug.SetMemoryLimit(math.MaxInt64)
		s.MemoryLimit = "none"
		return s, nil
	}
	debug.SetMemoryLimit(limit)
	s.MemoryLimit = strconv.FormatInt(limit>>20, 10) + "MiB"
	return s, nil
}

// parseByteSize reads "1073741824", "512MiB", "2GiB", "64KiB", "1GB"; an
// empty string, "0" and "off" are 0.
func parseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "", "0", "off":
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size in bytes (such as 512MiB)", s)
	}
	return n * mult, nil
}

// cgroupMemoryLimit returns the memory limit of the cgroup this process
// runs in (cgroup v2, then v1), or 0 when there is none.
func cgroupMemoryLimit() int64 { return memoryLimitIn(cgroupLimitFiles()) }

// memoryLimitIn reads the first of files that exists as a cgroup memory
// limit: "max" (v2) or a huge number (v1) mean none, and so does 0.
func memoryLimitIn(files []string) int64 {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		// cgroup v1 reports "no limit" as a huge page-aligned number.
		if err != nil || n <= 0 || n >= 1<<62 {
			return 0
		}
		return n
	}
	return 0
}

// cgroupLimitFiles lists where this process's cgroup memory limit may be
// read, most specific first.
func cgroupLimitFiles() []string {
	var files []string
	if f, err := os.Open("/proc/self/cgroup"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// hierarchy-id:controllers:path
			parts := strings.SplitN(sc.Text(), ":", 3)
			if len(parts) != 3 {
				continue
			}
			switch {
			case parts[0] == "0" && parts[1] == "":
				files = append(files, filepath.Join("/sys/fs/cgroup", parts[2], "memory.max"))
			case strings.Contains(","+parts[1]+",", ",memory,"):
				files = append(files, filepath.Join("/sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes"))
			}
		}
	}
	return append(files, "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
}
