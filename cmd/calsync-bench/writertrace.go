package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

// writerTrace reads a Go execution trace of calsync serve (from its
// /debug/pprof/trace) and reports where the SQLite group committer, the one
// goroutine every write waits on, spends its wall-clock time: running,
// in system calls (by kind), runnable without a core, or waiting for work.
func writerTrace(path string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := trace.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var (
		committer = trace.NoGoroutine
		state     trace.GoState
		since     trace.Time
		call      string // the system call under way, while in GoSyscall
		first     trace.Time
		last      trace.Time
		byState   = map[trace.GoState]time.Duration{}
		calls     = map[string]*durations{}
		runnable  durations
	)
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if first == 0 {
			first = ev.Time()
		}
		last = ev.Time()
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		if committer == trace.NoGoroutine && stackHas(ev.Stack(), "store/sqlite.(*DB).commitLoop") {
			committer = id
		}
		if id != committer {
			continue
		}
		_, to := st.Goroutine()
		if since != 0 {
			d := time.Duration(ev.Time() - since)
			byState[state] += d
			switch state {
			case trace.GoSyscall:
				if calls[call] == nil {
					calls[call] = &durations{}
				}
				calls[call].add(d)
			case trace.GoRunnable:
				runnable.add(d)
			}
		}
		state, since = to, ev.Time()
		if to == trace.GoSyscall {
			call = syscallKind(ev.Stack())
		}
	}
	if committer == trace.NoGoroutine {
		return fmt.Errorf("%s: no goroutine of the SQLite group committer (store/sqlite.(*DB).commitLoop) in the trace", path)
	}
	span := time.Duration(last - first)
	fmt.Fprintf(w, "group committer (goroutine %d) over %v of trace:\n", committer, span.Round(time.Millisecond))
	for _, s := range []trace.GoState{trace.GoRunning, trace.GoSyscall, trace.GoRunnable, trace.GoWaiting} {
		fmt.Fprintf(w, "  %-9s %10v  %4.1f%%\n", s, byState[s].Round(time.Millisecond), 100*byState[s].Seconds()/span.Seconds())
	}
	kinds := make([]string, 0, len(calls))
	for k := range calls {
		kinds = append(kinds, k)
	}
	slices.SortFunc(kinds, func(a, b string) int { return int(calls[b].sum - calls[a].sum) })
	for _, k := range kinds {
		fmt.Fprintf(w, "  system call %-8s %s\n", k, calls[k])
	}
	fmt.Fprintf(w, "  runnable without a core: %s\n", &runnable)
	return nil
}

// stackHas reports whether a frame of s is in a function whose name
// contains fn.
func stackHas(s trace.Stack, fn string) bool {
	for f := range s.Frames() {
		if strings.Contains(f.Func, fn) {
			return true
		}
	}
	return false
}

// syscallKind names a system call by the libc function SQLite called (the
// outermost, so fcntl rather than the raw call it makes).
func syscallKind(s trace.Stack) string {
	kind := "other"
	for f := range s.Frames() {
		if i := strings.Index(f.Func, "libc.X"); i >= 0 {
			kind = strings.TrimPrefix(f.Func[i:], "libc.X")
		}
	}
	return kind
}

// durations summarizes a set of durations.
type durations struct {
	all []time.Duration
	sum time.Duration
}

func (d *durations) add(x time.Duration) {
	d.all = append(d.all, x)
	d.sum += x
}

func (d *durations) String() string {
	if len(d.all) == 0 {
		return "none"
	}
	s := slices.Sorted(slices.Values(d.all))
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return fmt.Sprintf("%6d × mean %v (p50 %v, p99 %v, max %v), %v in all",
		len(s), (d.sum / time.Duration(len(s))).Round(time.Microsecond), q(0.5).Round(time.Microsecond),
		q(0.99).Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond), d.sum.Round(time.Millisecond))
}
