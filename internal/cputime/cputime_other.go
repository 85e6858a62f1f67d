//go:build !unix

package cputime

import "time"

// Process returns 0: this platform reports no CPU time here.
func Process() time.Duration { return 0 }
