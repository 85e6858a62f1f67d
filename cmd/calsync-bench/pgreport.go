package main

import (
	"bytes"
	"fmt"
	"strings"
)

// Targets of the PostgreSQL scenarios.
const (
	pgFanoutP50Target = 10.0 // ms
	pgFanoutP99Target = 50.0 // ms
	pgFailoverTarget  = 20.0 // s
)

// writePostgresTargets adds the PostgreSQL rows of the targets table.
func writePostgresTargets(b *bytes.Buffer, pg *PGResults) {
	// The issue sets no ratio to reach: the row reports it beside
	// pgbench, measured in the same run.
	for _, x := range pg.Ingest {
		base := "no pgbench run"
		if pg.PGBench != nil && pg.PGBench.TPS > 0 {
			base = fmt.Sprintf("pgbench single-row inserts %.0f/s (ratio %.2f)", pg.PGBench.TPS, x.Load.Throughput/pg.PGBench.TPS)
		}
		fmt.Fprintf(b, "| PostgreSQL, %s: durable ingestion, beside PostgreSQL's own single-row insert rate | %.0f/s, processed %s/s | %s | report |\n",
			strings.TrimPrefix(x.Name, "postgres, "), x.Load.Throughput, orDash(x.ProcessedPerS, "%.0f"), base)
	}
	if f := pg.Fanout; f != nil {
		fmt.Fprintf(b, "| PostgreSQL, %.0f webhooks/s to replica A, %d watchers on replica B: sent→received p50 ≤ %.0f ms | %.2f ms | | %s |\n",
			f.Rate, f.Filtered+f.Unfiltered, pgFanoutP50Target, f.Latency.P50, mark(f.Latency.Count > 0 && f.Latency.P50 <= pgFanoutP50Target))
		fmt.Fprintf(b, "| same: p99 ≤ %.0f ms | %.2f ms (max %.1f ms) | | %s |\n", pgFanoutP99Target, f.Latency.P99, f.Latency.Max,
			mark(f.Latency.Count > 0 && f.Latency.P99 <= pgFanoutP99Target))
		fmt.Fprintf(b, "| same: every change once, in order | %d received, %d missing, %d duplicated%s, %d order disagreements | | %s |\n",
			f.Check.Received, f.Check.Missing, f.Check.Duplicates, beforeStart(f.Check), f.Check.OrderDisagreements,
			mark(f.Check.Received > 0 && f.AllCaught && f.Check.Missing+f.Check.Duplicates == 0 && f.Check.OrderDisagreements == 0))
	}
	if x := pg.Failover; x != nil {
		got := fmt.Sprintf("not completed within %.0f s", x.DeadlineSeconds)
		if x.Completed {
			got = fmt.Sprintf("%.1f s (another replica asked Recall after %.1f s)", x.CompletedSeconds, x.TakeoverSeconds)
		}
		fmt.Fprintf(b, "| PostgreSQL, %d replicas: kill -9 of the replica holding work → work completed elsewhere ≤ %.0f s | %s | | %s |\n",
			x.Replicas, pgFailoverTarget, got, mark(x.Completed && x.CompletedSeconds <= pgFailoverTarget))
	}
}

// writePostgresMarkdown writes the PostgreSQL section: ingestion beside
// pgbench, the cross-replica fan-out and the failover.
func writePostgresMarkdown(b *bytes.Buffer, pg *PGResults, p Profile) {
	fmt.Fprintf(b, "### On PostgreSQL (replicas sharing one private server)\n\n")
	fmt.Fprintf(b, "PostgreSQL %s, started by the tool (initdb into a temporary directory, Unix socket): %s. "+
		"Each scenario has a database of its own; replicas are `calsync serve --db postgres://…` with default settings.\n\n", pg.Version, pg.Settings)
	if len(pg.Ingest) > 0 || pg.PGBench != nil {
		fmt.Fprintf(b, "Closed loop over %d connections, %v, spread round-robin over the replicas; processed/s counts until the inbox holds nothing pending. "+
			"CPU is summed over the replicas; PostgreSQL's is every server process's.\n\n", p.Conns, p.Duration)
		fmt.Fprintf(b, "| run | webhooks/s | answer p50 | p99 | max | errors | calsync CPU | calsync µs/webhook | PostgreSQL CPU | PostgreSQL µs/webhook | WAL bytes/webhook | webhooks per WAL flush | processed/s (incl. drain) | drain | dead-lettered |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range pg.Ingest {
			fmt.Fprintf(b, "| %s | %.0f | %.2f ms | %.2f ms | %.1f ms | %d | %.0f%% | %.0f | %.0f%% | %.0f | %.0f | %.1f | %s | %.1f s | %d |\n", x.Name, x.Load.Throughput,
				x.Load.Answer.P50, x.Load.Answer.P99, x.Load.Answer.Max, x.Load.Errors, x.Server.CPUPercent, x.Server.CPUPerOp,
				x.PGCPUPercent, x.PGCPUPerWebhook, x.WAL.BytesPerOp, x.WAL.OpsPerSync, orDash(x.ProcessedPerS, "%.0f"), x.DrainSeconds, x.Dead)
		}
		if x := pg.PGBench; x != nil {
			fmt.Fprintf(b, "| pgbench: %d clients (-j %d), one %d-byte row per transaction | %.0f | | | | | | | %.0f%% | %.0f per row | %.0f per row | %.1f rows | | | |\n",
				x.Clients, x.Threads, x.RowBytes, x.TPS, x.PGCPUPercent, x.PGCPUPerRow, x.WAL.BytesPerOp, x.WAL.OpsPerSync)
		}
		b.WriteString("\n")
		if x := pg.PGBench; x != nil && x.TPS > 0 && len(pg.Ingest) > 0 {
			fmt.Fprintf(b, "calsync on PostgreSQL ingests at")
			for i, in := range pg.Ingest {
				if i > 0 {
					b.WriteString(" and")
				}
				fmt.Fprintf(b, " **%.2f×** (%s)", in.Load.Throughput/x.TPS, strings.TrimPrefix(in.Name, "postgres, "))
			}
			fmt.Fprintf(b, " PostgreSQL's own single-row insert rate, `%s`.\n\n", x.Command)
		}
		for _, in := range pg.Ingest {
			if l := in.Log; l != nil {
				fmt.Fprintf(b, "Change log after the run with %s: %d changes, %.0f bytes each with indexes (inbox: %.0f bytes per delivery; database %.1f MB). "+
					"Compacting %d changes (calsync's CompactChanges, 5,000 per transaction) took %.2f s, %.1f µs and %.1f µs of PostgreSQL CPU per change; VACUUM after it %.2f s.\n\n",
					strings.TrimPrefix(in.Name, "postgres, "), l.Changes, l.BytesPerChange, l.BytesPerDelivery, float64(l.DatabaseBytes)/(1<<20), l.Compacted, l.CompactSeconds, l.CompactUSPerChange, l.PGCPUPerChange, l.VacuumSeconds)
			}
		}
	}
	if f := pg.Fanout; f != nil {
		fmt.Fprintf(b, "Cross-replica fan-out: %.0f webhooks/s sent to replica A for %v, %d one-calendar + %d unfiltered watchers (%d over REST) on replica B: "+
			"sent→received p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.1f ms; %d changes received, %d missing, %d duplicated%s, %d order disagreements, all caught up: %v. Replica B's CPU %.0f%%.\n\n",
			f.Rate, p.Duration, f.Filtered, f.Unfiltered, f.REST, f.Latency.P50, f.Latency.P90, f.Latency.P99, f.Latency.Max,
			f.Check.Received, f.Check.Missing, f.Check.Duplicates, beforeStart(f.Check), f.Check.OrderDisagreements, f.AllCaught, f.Server.CPUPercent)
		for _, d := range f.Check.DuplicateSamples {
			fmt.Fprintf(b, "- duplicate: %s\n", d)
		}
		if len(f.Check.DuplicateSamples) > 0 {
			b.WriteString("\n")
		}
	}
	if x := pg.Failover; x != nil {
		fmt.Fprintf(b, "Failover: %d replicas; replica %d held %s and was killed with SIGKILL. ", x.Replicas, x.Holder, x.Work)
		if x.TakenBy >= 0 {
			fmt.Fprintf(b, "Replica %d asked Recall for the events %.1f s later; ", x.TakenBy, x.TakeoverSeconds)
		} else {
			b.WriteString("No other replica asked Recall for the events; ")
		}
		if x.Completed {
			fmt.Fprintf(b, "the change was in the store, with nothing pending, %.1f s after the kill (target ≤ %.0f s).\n\n", x.CompletedSeconds, pgFailoverTarget)
		} else {
			fmt.Fprintf(b, "the work did not complete within %.0f s of the kill (target ≤ %.0f s).\n\n", x.DeadlineSeconds, pgFailoverTarget)
		}
	}
}

// beforeStart says how many duplicates were changes committed before the
// watch started, if any: on a replica whose change feed lags, a watch
// "from now" starts at the replica's position, behind the database's.
func beforeStart(c StreamCheck) string {
	if c.BeforeStart == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d of them committed before the watch started)", c.BeforeStart)
}
