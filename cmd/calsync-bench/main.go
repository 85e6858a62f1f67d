// Command calsync-bench measures calsync through its public API only
// (webhooks over REST, watch streams over gRPC and REST NDJSON) against
// baselines run in the same invocation, and checks while it measures that
// nothing is lost, doubled or reordered. `make bench`, `make bench-quick`,
// `make bench-peers`, `make crash-test` and `make fault-test` run it.
//
// The tool is a module of its own (go.mod here replaces
// github.com/calsync/calsync with this checkout), so what only it needs,
// such as the etcd client, stays out of calsync's go.mod. Run it from the
// repository root: it builds ./cmd/calsync and writes benchmarks/ and
// BENCHMARKS.md there (`make bench-tool` builds it into .build/).
//
// Subcommands:
//
//	calsync-bench run     [-profile quick|full] [-target GRPC,HTTP] [-pprof auto] [-only SCENARIOS] [-catchup-changes N] [-out FILE] [-md BENCHMARKS.md]
//	calsync-bench peers   [-profile quick|full] [-calsync BIN] [-etcd BIN] [-out FILE] [-md BENCHMARKS.md]
//	calsync-bench crash   [-cycles 20] [-out FILE]
//	calsync-bench faults  [-out FILE]
//	calsync-bench report  [-md BENCHMARKS.md]
//	calsync-bench bare    -addr ADDR   (the bare net/http ceiling server)
//	calsync-bench reference -addr ADDR -db FILE
//	                                   (net/http and SQLite's rows alone; see reference.go)
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

func main() {
	// The tool's own heap is small and every message it receives churns
	// it, so with the default target the collector runs almost without
	// pause during a catch-up. A higher target keeps the load generator's
	// share of the machine down. It is set here, not through GOGC, so the
	// calsync it starts keeps its own default.
	debug.SetGCPercent(400)
	log.SetFlags(log.Ltime)
	log.SetPrefix("calsync-bench ")
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: calsync-bench run|peers|crash|faults|report|writer-trace|bare|reference [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	profile := fs.String("profile", "full", "run size: quick (under a minute) or full")
	out := fs.String("out", "", "JSON result file (default benchmarks/<subcommand>-<profile>.json)")
	md := fs.String("md", "BENCHMARKS.md", "Markdown file whose generated section is rewritten from the result files")
	bin := fs.String("calsync", "", "calsync binary to run (default: build ./cmd/calsync)")
	addr := fs.String("addr", "127.0.0.1:0", "listen address (bare, reference)")
	dbPath := fs.String("db", "", "database file (reference)")
	cycles := fs.Int("cycles", 20, "crash cycles (crash)")
	pprofAddr := fs.String("pprof", "", "have the calsync under test serve pprof on this address (auto: a free one) and save CPU profiles of each measured phase in benchmarks/profiles")
	etcdBin := fs.String("etcd", "etcd", "etcd binary (peers)")
	target := fs.String("target", "", "GRPC_ADDR,HTTP_ADDR of a running calsync to measure instead of starting one (run); it must use this tool's webhook secrets")
	only := fs.String("only", "", "comma-separated scenarios to run, out of "+strings.Join(scenarioNames, ",")+" (run; default all); a partial run writes benchmarks/run-<profile>-<scenarios>.json and leaves BENCHMARKS.md alone")
	catchupDB := fs.String("catchup-db", "", "keep the catch-up scenario's filled database in this file (and FILE.json) and reuse it while it holds -catchup-changes changes (run): for iterating on the replay")
	catchupChanges := fs.Int("catchup-changes", 0, "size of the catch-up change log (run; default the profile's)")
	_ = fs.Parse(os.Args[2:])
	p, ok := profiles[*profile]
	if !ok {
		log.Fatalf("unknown profile %q", *profile)
	}
	if *catchupChanges > 0 {
		p.CatchupChanges = *catchupChanges
	}
	scenarios, err := parseScenarios(*only)
	if err != nil {
		log.Fatal(err)
	}
	if *out == "" {
		*out = fmt.Sprintf("benchmarks/%s-%s.json", os.Args[1], p.Name)
		if scenarios != nil {
			*out = fmt.Sprintf("benchmarks/%s-%s-%s.json", os.Args[1], p.Name, strings.ReplaceAll(*only, ",", "-"))
		}
	}
	switch os.Args[1] {
	case "bare":
		err = bareServer(*addr)
	case "reference":
		err = serveReference(ctx, *addr, *dbPath)
	case "run":
		err = runBench(ctx, p, RunOptions{Bin: *bin, Pprof: *pprofAddr, Target: *target, Only: scenarios, CatchupDB: *catchupDB, Out: *out, MD: *md})
	case "peers":
		err = runPeers(ctx, p, *etcdBin, *bin, *out, *md)
	case "crash":
		err = runCrash(ctx, *bin, *cycles, *out)
	case "faults":
		err = runFaults(ctx, *bin, *out)
	case "report":
		err = writeMarkdown(*md)
	case "writer-trace":
		if fs.NArg() != 1 {
			err = fmt.Errorf("usage: calsync-bench writer-trace TRACE_FILE (from calsync serve --pprof-addr A: curl A/debug/pprof/trace?seconds=3)")
			break
		}
		err = writerTrace(fs.Arg(0), os.Stdout)
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		log.Fatal(err)
	}
}
