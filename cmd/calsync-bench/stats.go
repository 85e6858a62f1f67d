package main

import (
	"slices"
	"sync"
	"time"
)

// Latencies collects durations so that percentiles are exact rather than
// bucketed: a benchmark run records at most a few million samples, which
// fits in memory, and exact figures are what a reader compares.
type Latencies struct {
	mu      sync.Mutex
	samples []time.Duration
}

// Add records one sample. It is safe for concurrent use.
func (l *Latencies) Add(d time.Duration) {
	l.mu.Lock()
	l.samples = append(l.samples, d)
	l.mu.Unlock()
}

// Merge adds every sample of other, so that per-stream collectors can be
// combined without sharing a lock on the hot path.
func (l *Latencies) Merge(other []time.Duration) {
	l.mu.Lock()
	l.samples = append(l.samples, other...)
	l.mu.Unlock()
}

// Summary returns the count and percentiles of the samples so far.
func (l *Latencies) Summary() Summary {
	l.mu.Lock()
	s := slices.Clone(l.samples)
	l.mu.Unlock()
	return Summarize(s)
}

// Summary is the distribution of a set of latencies, in milliseconds so the
// JSON result file reads without conversions.
type Summary struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// Summarize sorts samples in place and returns their distribution. The
// percentile is the nearest-rank one: the smallest sample at or above which
// the given share of samples lies, so p100 is the maximum and no value is
// interpolated that was never observed.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	slices.Sort(samples)
	return Summary{
		Count: len(samples),
		P50:   ms(Percentile(samples, 50)),
		P90:   ms(Percentile(samples, 90)),
		P99:   ms(Percentile(samples, 99)),
		Max:   ms(samples[len(samples)-1]),
	}
}

// Percentile returns the nearest-rank p-th percentile of sorted samples, or
// 0 when there are none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// Nearest rank: ceil(p/100 * n), 1-based.
	rank := int(p / 100 * float64(n))
	if float64(rank) < p/100*float64(n) {
		rank++
	}
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// median returns the middle of xs (the mean of the two middle values when
// there are an even number), or 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
