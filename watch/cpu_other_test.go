//go:build !unix

package watch_test

import "time"

// processCPU returns 0: benchmarks report no CPU time on this platform.
func processCPU() time.Duration { return 0 }
