//go:build unix

// Package cputime reads the CPU time the process has used, so benchmarks
// can report CPU per operation: on a shared machine that figure moves far
// less than wall-clock throughput does.
package cputime

import (
	"syscall"
	"time"
)

// Process returns the CPU time, user and system, the process has used.
func Process() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
