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
// in system calls (by kind), runnable without a core, or waiting for work;
// and the same for the goroutine that syncs the WAL when the committer
// has more to write (store/sqlite's syncer).
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
	tracked := []*goTimes{
		{name: "group committer", fn: "store/sqlite.(*DB).commitLoop", id: trace.NoGoroutine},
		{name: "WAL syncer", fn: "store/sqlite.(*syncer).loop", id: trace.NoGoroutine},
	}
	var first, last trace.Time
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
		for _, g := range tracked {
			g.see(ev, st)
		}
	}
	if tracked[0].id == trace.NoGoroutine {
		return fmt.Errorf("%s: no goroutine of the SQLite group committer (store/sqlite.(*DB).commitLoop) in the trace", path)
	}
	span := time.Duration(last - first)
	for _, g := range tracked {
		if g.id != trace.NoGoroutine {
			g.report(w, span)
		}
	}
	return nil
}

// goTimes is one goroutine's wall clock by state, found by a function on
// its stack.
type goTimes struct {
	name, fn string
	id       trace.GoID
	state    trace.GoState
	since    trace.Time
	call     string // the system call under way, while in GoSyscall
	byState  map[trace.GoState]time.Duration
	calls    map[string]*durations
	runnable durations
}

// see accounts for a goroutine state transition.
func (g *goTimes) see(ev trace.Event, st trace.StateTransition) {
	id := st.Resource.Goroutine()
	// The transition's own stack, not the event's: a goroutine the
	// committer wakes transitions on the committer's stack.
	if g.id == trace.NoGoroutine && stackHas(st.Stack, g.fn) {
		g.id = id
		g.byState, g.calls = map[trace.GoState]time.Duration{}, map[string]*durations{}
	}
	if id != g.id {
		return
	}
	_, to := st.Goroutine()
	if g.since != 0 {
		d := time.Duration(ev.Time() - g.since)
		g.byState[g.state] += d
		switch g.state {
		case trace.GoSyscall:
			if g.calls[g.call] == nil {
				g.calls[g.call] = &durations{}
			}
			g.calls[g.call].add(d)
		case trace.GoRunnable:
			g.runnable.add(d)
		}
	}
	g.state, g.since = to, ev.Time()
	if to == trace.GoSyscall {
		g.call = syscallKind(ev.Stack())
	}
}

func (g *goTimes) report(w io.Writer, span time.Duration) {
	fmt.Fprintf(w, "%s (goroutine %d) over %v of trace:\n", g.name, g.id, span.Round(time.Millisecond))
	for _, s := range []trace.GoState{trace.GoRunning, trace.GoSyscall, trace.GoRunnable, trace.GoWaiting} {
		fmt.Fprintf(w, "  %-9s %10v  %4.1f%%\n", s, g.byState[s].Round(time.Millisecond), 100*g.byState[s].Seconds()/span.Seconds())
	}
	kinds := make([]string, 0, len(g.calls))
	for k := range g.calls {
		kinds = append(kinds, k)
	}
	slices.SortFunc(kinds, func(a, b string) int { return int(g.calls[b].sum - g.calls[a].sum) })
	for _, k := range kinds {
		fmt.Fprintf(w, "  system call %-8s %s\n", k, g.calls[k])
	}
	fmt.Fprintf(w, "  runnable without a core: %s\n", &g.runnable)
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
// outermost, so fcntl rather than the raw call it makes); the WAL's sync
// after the commit (walvfs.(*Log).Sync) is an fsync too.
func syscallKind(s trace.Stack) string {
	if stackHas(s, "walvfs.(*Log).Sync") {
		return "fsync"
	}
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
