package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Machine describes where a run happened, so figures are never read
// without their context.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	MemoryGiB int    `json:"memory_gib"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	// LoadBefore is the 1-minute load average when the run started: the
	// machine is shared, and a busy neighbour lowers every figure.
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), LoadBefore: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"), "%d", &kb)
		m.MemoryGiB = int((kb + (1 << 19)) >> 20)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Results is the JSON result file of `calsync-bench run`.
type Results struct {
	Command   string         `json:"command"`
	Profile   Profile        `json:"profile"`
	Started   time.Time      `json:"started"`
	Machine   Machine        `json:"machine"`
	Ingest    []IngestResult `json:"ingest"`
	Fanout    *FanoutResult  `json:"fanout,omitempty"`
	Broadcast *FanoutResult  `json:"broadcast,omitempty"`
	Steps     []FanoutResult `json:"broadcast_steps,omitempty"`
	Idle      *IdleResult    `json:"idle,omitempty"`
	Catchup   *CatchupResult `json:"catchup,omitempty"`
	Postgres  *PGResults     `json:"postgres,omitempty"`
	Errors    []string       `json:"errors,omitempty"`
}

func (r *Results) fail(what string, err error) {
	log.Printf("%s: %v", what, err)
	r.Errors = append(r.Errors, what+": "+err.Error())
}

// runBench runs every calsync scenario and its baselines, writes the
// result file and regenerates BENCHMARKS.md.
// scenarioNames are the scenarios of `calsync-bench run`, in the order
// they run.
var scenarioNames = []string{"ingest", "fanout", "broadcast", "idle", "catchup", "pg-ingest", "pg-fanout", "pg-failover"}

// parseScenarios reads the -only flag: nil (every scenario) when empty.
func parseScenarios(only string) (map[string]bool, error) {
	if only == "" {
		return nil, nil
	}
	set := map[string]bool{}
	for name := range strings.SplitSeq(only, ",") {
		if !slices.Contains(scenarioNames, name) {
			return nil, fmt.Errorf("-only: unknown scenario %q (want some of %s)", name, strings.Join(scenarioNames, ","))
		}
		set[name] = true
	}
	return set, nil
}

// RunOptions are the flags of `calsync-bench run`.
type RunOptions struct {
	// Bin is the calsync binary; empty builds ./cmd/calsync.
	Bin string
	// Pprof is where the server under test serves pprof ("auto": a free
	// address); empty takes no profiles.
	Pprof string
	// Target is "GRPC_ADDR,HTTP_ADDR" of a running calsync, if any.
	Target string
	// Only names the scenarios to run; nil runs them all. A partial run
	// leaves the Markdown report alone, so it never shows half a run.
	Only map[string]bool
	// CatchupDB is [Env.CatchupDB].
	CatchupDB string
	Out, MD   string
}

func (o RunOptions) runs(scenario string) bool { return o.Only == nil || o.Only[scenario] }

func runBench(ctx context.Context, p Profile, o RunOptions) error {
	res := &Results{Command: "calsync-bench " + strings.Join(os.Args[1:], " "), Profile: p, Started: time.Now().UTC(), Machine: machine()}
	env, err := newEnv(p, o.Bin)
	if err != nil {
		return err
	}
	pprofAddr, target := o.Pprof, o.Target
	if pprofAddr == "auto" {
		pprofAddr = freeAddr()
	}
	env.Pprof, env.CatchupDB = pprofAddr, o.CatchupDB
	defer os.RemoveAll(env.Dir)
	defer env.Fake.Close()
	type ingestRun struct {
		name     string
		base     baseline
		maxBatch int
	}
	runs := []ingestRun{{bareName, bareBaseline, 0}, {referenceName, referenceBaseline, 0},
		{"calsync", noBaseline, 0}, {"calsync, group commit off", noBaseline, 1}}
	if target != "" {
		// A targeted server is measured as it is: the baselines need
		// servers the tool starts itself.
		g, h, ok := strings.Cut(target, ",")
		if !ok {
			return errors.New("-target wants GRPC_ADDR,HTTP_ADDR")
		}
		env.Target = &Child{Name: "target", GRPCAddr: g, HTTPAddr: h}
		runs = []ingestRun{{"calsync (target)", noBaseline, 0}}
	}
	if !o.runs("ingest") {
		runs = nil
	}
	for _, s := range runs {
		r, err := env.ingest(ctx, s.name, s.base, s.maxBatch)
		if err != nil {
			res.fail(s.name, err)
			continue
		}
		res.Ingest = append(res.Ingest, r)
	}
	if !o.runs("fanout") {
		log.Printf("fanout: skipped (-only)")
	} else if c, err := env.calsync(ctx, "fanout", 0, "FULL"); err != nil {
		res.fail("fanout", err)
	} else {
		r, err := env.fanout(ctx, c, "fanout", p.FanoutRate, p.FilteredStreams, p.UnfilteredStreams, p.Duration, true)
		if err != nil {
			res.fail("fanout", err)
		} else {
			res.Fanout = &r
		}
		c.Stop(10 * time.Second)
	}
	if !o.runs("broadcast") {
		log.Printf("broadcast: skipped (-only)")
	} else if c, err := env.calsync(ctx, "broadcast", 0, "FULL"); err != nil {
		res.fail("broadcast", err)
	} else {
		r, err := env.fanout(ctx, c, "broadcast", p.BroadcastRate, 0, p.BroadcastStreams, p.Duration, false)
		if err != nil {
			res.fail("broadcast", err)
		} else {
			res.Broadcast = &r
			// Step the rate up until the stream latency target or the rate
			// itself is missed: the last step that held is sustainable.
			for rate := 2 * p.BroadcastRate; rate <= 32*p.BroadcastRate && ctx.Err() == nil; rate *= 2 {
				s, err := env.fanout(ctx, c, fmt.Sprintf("broadcast@%.0f", rate), rate, 0, p.BroadcastStreams, p.Duration/2, false)
				if err != nil {
					res.fail("broadcast step", err)
					break
				}
				res.Steps = append(res.Steps, s)
				if s.Latency.P99 > 50 || s.Load.Throughput < 0.95*rate || !s.AllCaught {
					break
				}
			}
			for _, s := range append([]FanoutResult{r}, res.Steps...) {
				if s.Latency.P99 <= 50 && s.Load.Throughput >= 0.95*s.Rate && s.AllCaught {
					res.Broadcast.MaxSustainedMsgs = max(res.Broadcast.MaxSustainedMsgs, s.MessagesPerS)
				}
			}
		}
		c.Stop(10 * time.Second)
	}
	if env.Target != nil || !o.runs("idle") {
		// Idle memory and catch-up need a fresh server of their own.
	} else if r, err := env.idle(ctx, p.IdleStreams); err != nil {
		res.fail("idle", err)
	} else {
		res.Idle = &r
	}
	if env.Target == nil && o.runs("catchup") {
		if r, err := env.catchup(ctx, p.CatchupChanges); err != nil {
			res.fail("catch-up", err)
		} else {
			res.Catchup = &r
		}
	}
	if env.Target == nil && (o.runs("pg-ingest") || o.runs("pg-fanout") || o.runs("pg-failover")) {
		res.Postgres = env.postgres(ctx, o, res)
	}
	res.Machine.LoadAfter = loadavg()
	if err := writeJSON(o.Out, res); err != nil {
		return err
	}
	if o.Only != nil {
		return nil
	}
	return writeMarkdown(o.MD)
}

func writeJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	log.Printf("wrote %s", path)
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func readJSON(path string, v any) bool {
	b, err := os.ReadFile(path)
	return err == nil && json.Unmarshal(b, v) == nil
}

// Markers delimit the part of BENCHMARKS.md this tool owns; the prose
// around them is written by people.
const (
	beginMarker = "<!-- BEGIN calsync-bench: generated by `.build/calsync-bench report` (make bench-tool), do not edit -->"
	endMarker   = "<!-- END calsync-bench -->"
	// beginPrefix finds the generated section whatever its begin marker
	// said when it was written.
	beginPrefix = "<!-- BEGIN calsync-bench"
)

func mark(ok bool) string {
	if ok {
		return "✅"
	}
	return "❌"
}

// writeMarkdown regenerates the generated section of md from the result
// files under benchmarks/, preferring a full run to a quick one.
func writeMarkdown(md string) error {
	var b bytes.Buffer
	var r Results
	src := "benchmarks/run-full.json"
	if !readJSON(src, &r) {
		src = "benchmarks/run-quick.json"
		if !readJSON(src, &r) {
			return errors.New("no result file in benchmarks/: run `make bench` first")
		}
	}
	m := r.Machine
	fmt.Fprintf(&b, "%s\n\n", beginMarker)
	fmt.Fprintf(&b, "Run `%s` (profile %s), %s, on %s, %d cores, %d GiB, Linux %s, %s. Load average before %s, after %s (the machine is shared).\n\n",
		r.Command, r.Profile.Name, r.Started.Format(time.RFC3339), m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.Go, m.LoadBefore, m.LoadAfter)
	var ceiling, reference, cs, nobatch *IngestResult
	for i := range r.Ingest {
		switch r.Ingest[i].Name {
		case bareName:
			ceiling = &r.Ingest[i]
		case referenceName:
			reference = &r.Ingest[i]
		case "calsync":
			cs = &r.Ingest[i]
		case "calsync, group commit off":
			nobatch = &r.Ingest[i]
		}
	}
	fmt.Fprintf(&b, "### Webhook ingestion, closed loop over %d connections, %v per run\n\n", r.Profile.Conns, r.Profile.Duration)
	fmt.Fprintf(&b, "| server | webhooks/s | answer p50 | p90 | p99 | max | errors | server CPU | client CPU | server CPU µs/webhook | peak RSS | processed/s (incl. drain) | dead-lettered |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.Ingest {
		fmt.Fprintf(&b, "| %s | %.0f | %.2f ms | %.2f ms | %.2f ms | %.1f ms | %d | %.0f%% | %.0f%% | %.0f | %.1f MB | %s | %d |\n", x.Name, x.Load.Throughput,
			x.Load.Answer.P50, x.Load.Answer.P90, x.Load.Answer.P99, x.Load.Answer.Max, x.Load.Errors, x.Server.CPUPercent, x.Server.ClientCPUPercent, x.Server.CPUPerOp, x.Server.PeakRSSMB,
			orDash(x.ProcessedPerS, "%.0f"), x.Dead)
	}
	b.WriteString("\n")
	if cs != nil && ceiling != nil {
		fmt.Fprintf(&b, "calsync ingests at **%.0f%%** of the bare net/http ceiling", 100*cs.Load.Throughput/ceiling.Load.Throughput)
		if nobatch != nil && nobatch.Load.Throughput > 0 {
			fmt.Fprintf(&b, " and **%.1f×** the throughput of the same server committing one transaction per delivery", cs.Load.Throughput/nobatch.Load.Throughput)
		}
		b.WriteString(".")
		if reference != nil && reference.Load.Throughput > 0 {
			fmt.Fprintf(&b, " A server that only writes calsync's rows for this load into SQLite (the reference: net/http, group commit with synchronous=FULL through calsync's WAL layer, and no decoding, normalization, streams or metrics; `cmd/calsync-bench/reference.go`) takes %.0f µs of CPU per webhook and answers %.0f/s; calsync, doing all of its work, %.0f µs and %.2f× the reference's rate.",
				reference.Server.CPUPerOp, reference.Load.Throughput, cs.Server.CPUPerOp, cs.Load.Throughput/reference.Load.Throughput)
		}
		b.WriteString("\n\n")
	}
	var peers PeersResult
	havePeers := readJSON(strings.Replace(src, "run-", "peers-", 1), &peers)
	fmt.Fprintf(&b, "### Targets\n\n| target | measured | baseline | met |\n|---|---|---|---|\n")
	if cs != nil {
		base := ""
		if ceiling != nil {
			base = fmt.Sprintf("bare net/http %.0f/s (ratio %.2f)", ceiling.Load.Throughput, cs.Load.Throughput/ceiling.Load.Throughput)
		}
		if reference != nil {
			base += fmt.Sprintf("; SQLite's rows alone (reference) %.0f/s at %.0f µs/webhook", reference.Load.Throughput, reference.Server.CPUPerOp)
		}
		if nobatch != nil {
			base += fmt.Sprintf("; group commit off %.0f/s", nobatch.Load.Throughput)
		}
		if havePeers && peers.Put != nil {
			base += fmt.Sprintf("; etcd put %.0f/s", peers.Put.Throughput)
		}
		fmt.Fprintf(&b, "| durable ingestion (synchronous=FULL) ≥ 15,000 webhooks/s | %.0f/s | %s | %s |\n", cs.Load.Throughput, base, mark(cs.Load.Throughput >= 15000))
	}
	if f := r.Fanout; f != nil {
		etcd := "no etcd run"
		cs, es := peers.pairedP99s()
		if len(cs) > 0 {
			var p50s []float64
			for _, pr := range peers.Pairs {
				p50s = append(p50s, pr.Etcd.Latency.P50)
			}
			etcd = fmt.Sprintf("etcd put→watch in `make bench-peers`: median p50 %.2f ms, p99 %.2f ms", median(p50s), median(es))
		}
		fmt.Fprintf(&b, "| %.0f webhooks/s, %d one-calendar + %d unfiltered streams: sent→received p50 ≤ 5 ms | %.2f ms | %s | %s |\n",
			f.Rate, f.Filtered, f.Unfiltered, f.Latency.P50, etcd, mark(f.Latency.P50 <= 5))
		fmt.Fprintf(&b, "| same: p99 ≤ 25 ms | %.2f ms (max %.1f ms) | | %s |\n", f.Latency.P99, f.Latency.Max, mark(f.Latency.P99 <= 25))
		if len(cs) > 0 {
			fmt.Fprintf(&b, "| same: p99 ≤ etcd's p99, calsync and etcd run back to back by `make bench-peers` (median over %d pairs) | calsync %.2f ms (%s) | etcd %.2f ms (%s) | %s |\n",
				len(cs), median(cs), joinMs(cs), median(es), joinMs(es), mark(median(cs) <= median(es)))
		}
		fmt.Fprintf(&b, "| same: every change once, in order | %d received, %d missing, %d duplicated, %d order disagreements | | %s |\n",
			f.Check.Received, f.Check.Missing, f.Check.Duplicates, f.Check.OrderDisagreements, mark(f.Check.Missing+f.Check.Duplicates == 0 && f.Check.OrderDisagreements == 0))
	}
	if f := r.Broadcast; f != nil {
		fmt.Fprintf(&b, "| %d unfiltered streams at %.0f changes/s: p99 ≤ 50 ms | p50 %.2f ms, p99 %.2f ms | | %s |\n", f.Unfiltered, f.Rate, f.Latency.P50, f.Latency.P99, mark(f.Latency.P99 <= 50))
		for _, st := range r.Steps {
			if st.Rate == 2000 {
				fmt.Fprintf(&b, "| %d unfiltered streams at %.0f changes/s: p99 ≤ 50 ms | p50 %.2f ms, p99 %.2f ms (%.0f changes/s sent) | | %s |\n",
					st.Unfiltered, st.Rate, st.Latency.P50, st.Latency.P99, st.Load.Throughput, mark(st.Latency.P99 <= 50 && st.Load.Throughput >= 0.95*st.Rate))
			}
		}
		if f.MaxSustainedMsgs > 0 {
			fmt.Fprintf(&b, "| highest sustainable messages/s (p99 ≤ 50 ms) | %.0f messages/s | | report |\n", f.MaxSustainedMsgs)
		} else {
			fmt.Fprintf(&b, "| highest sustainable messages/s (p99 ≤ 50 ms) | none of the rates run held p99 ≤ 50 ms | | report |\n")
		}
	}
	if x := r.Idle; x != nil {
		fmt.Fprintf(&b, "| %d idle streams ≤ 20 KB of server memory each | %.1f KB | | %s |\n", x.Streams, x.KBPerStream, mark(x.KBPerStream <= 20))
		fmt.Fprintf(&b, "| idle RSS ≤ 40 MB | %.1f MB | | %s |\n", x.IdleRSSMB, mark(x.IdleRSSMB <= 40))
	}
	if x := r.Catchup; x != nil {
		fmt.Fprintf(&b, "| catch-up from a %d-change log ≥ 200,000 changes/s | %.0f changes/s (%d missing, %d duplicated, %d out of order; server CPU %.0f%%, client CPU %.0f%%) | | %s |\n",
			x.Changes, x.ChangesPerS, x.Missing, x.Duplicates, x.CursorRegressions, x.Server.CPUPercent, x.Server.ClientCPUPercent, mark(x.ChangesPerS >= 200000 && x.Missing+x.Duplicates+x.CursorRegressions == 0))
	}
	if r.Postgres != nil {
		writePostgresTargets(&b, r.Postgres)
	}
	b.WriteString("\n")
	if r.Fanout != nil || r.Broadcast != nil {
		fmt.Fprintf(&b, "### Streams\n\n| run | rate | streams (REST) | webhooks/s | sent→received p50 | p90 | p99 | max | messages/s | missing | dup | server CPU | client CPU | peak RSS | machine stalled on I/O |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, f := range append([]*FanoutResult{r.Fanout, r.Broadcast}, ptrs(r.Steps)...) {
			if f == nil {
				continue
			}
			fmt.Fprintf(&b, "| %s | %.0f/s | %d+%d (%d) | %.0f | %.2f ms | %.2f ms | %.2f ms | %.1f ms | %.0f | %d | %d | %.0f%% | %.0f%% | %.1f MB | %.0f ms |\n", f.Name, f.Rate, f.Filtered, f.Unfiltered, f.REST,
				f.Load.Throughput, f.Latency.P50, f.Latency.P90, f.Latency.P99, f.Latency.Max, f.MessagesPerS, f.Check.Missing, f.Check.Duplicates, f.Server.CPUPercent, f.Server.ClientCPUPercent, f.Server.PeakRSSMB, f.Server.IOStallMs)
		}
		b.WriteString("\n")
	}
	if r.Postgres != nil {
		writePostgresMarkdown(&b, r.Postgres, r.Profile)
	}
	if havePeers {
		writePeersMarkdown(&b, &peers)
	}
	var crash CrashResult
	if readJSON("benchmarks/crash.json", &crash) {
		fmt.Fprintf(&b, "### Crash test (`make crash-test`)\n\n%d cycles of kill -9 under load (%s): %d webhooks answered 200, %d lost, %d duplicated on %d resumed streams, %d events compared with the providers' truth, %d differ, %d dead-lettered.\n\n",
			crash.Cycles, crash.Started.Format(time.RFC3339), crash.Acked, crash.Lost, crash.Duplicated, crash.Streams, crash.Compared, crash.Diverged, crash.Dead)
	}
	var faults FaultResult
	if readJSON("benchmarks/faults.json", &faults) {
		writeFaultsMarkdown(&b, &faults)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "- run error: %s\n", e)
	}
	b.WriteString(endMarker + "\n")
	old, _ := os.ReadFile(md)
	text := string(old)
	i, j := strings.Index(text, beginPrefix), strings.Index(text, endMarker)
	if i < 0 || j < i {
		text = text + "\n" + b.String()
	} else {
		text = text[:i] + b.String() + text[j+len(endMarker)+1:]
	}
	log.Printf("wrote %s", md)
	return os.WriteFile(md, []byte(text), 0o644)
}

func ptrs[T any](s []T) []*T {
	out := make([]*T, len(s))
	for i := range s {
		out[i] = &s[i]
	}
	return out
}

// joinMs lists milliseconds as "a / b / c".
func joinMs(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " / ")
}

func orDash(v float64, f string) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf(f, v)
}
