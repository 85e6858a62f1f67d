package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/store/postgres"
)

// pgServer is the private PostgreSQL the PostgreSQL scenarios share: the
// same server the tests use (internal/pgtest: initdb into a temporary
// directory, as the postgres user when run as root, a Unix socket and a
// free port, fsync and synchronous_commit on), started by this tool and
// stopped when the run ends. Each scenario gets a database of its own.
type pgServer struct {
	srv     *pgtest.Server
	admin   *pgx.Conn
	seq     int
	Version string
	// Settings are the server settings that decide the figures.
	Settings string
}

// startPostgres starts a private PostgreSQL server.
func startPostgres(ctx context.Context) (*pgServer, error) {
	srv, err := pgtest.Start()
	if err != nil {
		return nil, err
	}
	s := &pgServer{srv: srv}
	if s.admin, err = pgx.Connect(ctx, srv.SocketURL("postgres")); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("connect to the private PostgreSQL: %w", err)
	}
	_ = s.admin.QueryRow(ctx, `SHOW server_version`).Scan(&s.Version)
	var settings []string
	for _, name := range []string{"fsync", "synchronous_commit", "shared_buffers", "max_connections"} {
		var v string
		if err := s.admin.QueryRow(ctx, `SELECT current_setting($1)`, name).Scan(&v); err == nil {
			settings = append(settings, name+"="+v)
		}
	}
	s.Settings = strings.Join(settings, ", ")
	return s, nil
}

// walStats are the server's write-ahead log counters at one instant.
type walStats struct {
	// bytes is the WAL position (pg_current_wal_lsn) as a byte offset.
	bytes int64
	// syncs counts WAL flushes to disk (pg_stat_wal.wal_sync): commits
	// that shared one flush count once.
	syncs int64
}

// WAL reads the WAL counters. pg_stat_wal is updated by each backend about
// once a second, so differences are exact only over longer runs.
func (s *pgServer) WAL(ctx context.Context) walStats {
	var w walStats
	_ = s.admin.QueryRow(ctx, `SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, (SELECT wal_sync FROM pg_stat_wal)`).Scan(&w.bytes, &w.syncs)
	return w
}

// WALUse is the WAL a scenario wrote.
type WALUse struct {
	BytesPerOp float64 `json:"wal_bytes_per_op"`
	SyncsPerS  float64 `json:"wal_syncs_per_s"`
	// OpsPerSync is how many operations (webhooks, rows) shared one WAL
	// flush: the group commit, calsync's and PostgreSQL's own.
	OpsPerSync float64 `json:"ops_per_wal_sync"`
}

func walUse(before, after walStats, elapsed time.Duration, ops int64) WALUse {
	var u WALUse
	if ops > 0 {
		u.BytesPerOp = float64(after.bytes-before.bytes) / float64(ops)
	}
	if syncs := after.syncs - before.syncs; syncs > 0 {
		u.SyncsPerS = float64(syncs) / elapsed.Seconds()
		u.OpsPerSync = float64(ops) / float64(syncs)
	}
	return u
}

// Stop stops the server and removes its directory.
func (s *pgServer) Stop() error {
	s.admin.Close(context.Background())
	return s.srv.Stop()
}

// newDatabase creates an empty database for a scenario and returns its
// connection URL through the server's Unix socket.
func (s *pgServer) newDatabase(ctx context.Context, scenario string) (string, error) {
	s.seq++
	name := fmt.Sprintf("bench_%02d_%s", s.seq, strings.ReplaceAll(fileName(scenario), "-", "_"))
	if _, err := s.admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return s.srv.SocketURL(name), nil
}

// CPU returns the CPU time the whole server has used so far: the
// postmaster, its live processes (backends, WAL writer, checkpointer...),
// and the processes it has reaped (cutime and cstime), so a backend that
// exits mid-scenario still counts.
func (s *pgServer) CPU() time.Duration {
	pid, err := postmasterPID(filepath.Join(s.srv.Dir, "data"))
	if err != nil {
		return 0
	}
	st, err := readStat(pid)
	if err != nil {
		return 0
	}
	total := st.cpu + st.childCPU
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cs, err := readStat(child); err == nil && cs.ppid == pid {
			total += cs.cpu
		}
	}
	return total
}

// postmasterPID reads the server's process id from its lock file.
func postmasterPID(data string) (int, error) {
	b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

// procStat is what /proc/<pid>/stat says about a process's CPU.
type procStat struct {
	ppid int
	// cpu is utime+stime; childCPU is cutime+cstime, the CPU of children
	// it has waited for.
	cpu, childCPU time.Duration
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// parseStat reads /proc/<pid>/stat. The command name (field 2) may hold
// spaces and parentheses, so fields are counted after the last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime..cstime 14..17.
	if len(f) < 15 {
		return procStat{}, errors.New("short /proc stat")
	}
	n := func(k int) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
	tick := func(v int64) time.Duration { return time.Duration(v) * time.Second / clockTicks }
	return procStat{ppid: int(n(1)), cpu: tick(n(11) + n(12)), childCPU: tick(n(13) + n(14))}, nil
}

// PGBenchResult is PostgreSQL's own single-row insert rate: pgbench's
// clients each committing one ~1 KB row per transaction, as a receiver
// without group commit would.
type PGBenchResult struct {
	Command      string  `json:"command"`
	Clients      int     `json:"clients"`
	Threads      int     `json:"threads"`
	RowBytes     int     `json:"row_bytes"`
	Transactions int64   `json:"transactions"`
	TPS          float64 `json:"tps"`
	LatencyAvgMS float64 `json:"latency_avg_ms"`
	// PGCPUPercent is the server's CPU over the run (100 = one core).
	PGCPUPercent float64 `json:"postgres_cpu_percent"`
	PGCPUPerRow  float64 `json:"postgres_cpu_us_per_row"`
	WAL          WALUse  `json:"wal"`
}

// minPGBenchRun is the shortest pgbench run of a benchmark: opening 64
// connections takes a while on a busy machine and pgbench counts it in -T,
// so a run as short as the quick profile's 2 s may commit nothing at all.
const minPGBenchRun = 5 * time.Second

// pgbenchRowBytes is the payload of one pgbench row: 32 md5 digests of
// random numbers, so no row compresses to nothing.
const pgbenchRowBytes = 32 * 32

// pgbenchScript inserts one row of pgbenchRowBytes per transaction.
const pgbenchScript = "INSERT INTO bench_rows (body) VALUES (repeat(md5(random()::text), 32));\n"

// runPGBench runs pgbench against a fresh database of s for d.
func runPGBench(ctx context.Context, s *pgServer, clients, threads int, d time.Duration, dir string) (PGBenchResult, error) {
	res := PGBenchResult{Clients: clients, Threads: threads, RowBytes: pgbenchRowBytes}
	url, err := s.newDatabase(ctx, "pgbench")
	if err != nil {
		return res, err
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return res, err
	}
	_, err = conn.Exec(ctx, `CREATE TABLE bench_rows (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(), body text NOT NULL)`)
	conn.Close(ctx)
	if err != nil {
		return res, err
	}
	script := filepath.Join(dir, "pgbench-insert.sql")
	if err := os.WriteFile(script, []byte(pgbenchScript), 0o644); err != nil {
		return res, err
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return res, err
	}
	argv := []string{filepath.Join(pgtest.BinDir, "pgbench"), "-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads),
		"-T", strconv.Itoa(secs), "-f", script, "-h", cfg.Host, "-p", strconv.Itoa(int(cfg.Port)), "-U", cfg.User, cfg.Database}
	res.Command = fmt.Sprintf("pgbench -n -c %d -j %d -T %d -f pgbench-insert.sql (%s)", clients, threads, secs, strings.TrimSpace(pgbenchScript))
	before, walBefore, start := s.CPU(), s.WAL(ctx), time.Now()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	elapsed := time.Since(start)
	cpu := s.CPU() - before
	walAfter := s.WAL(ctx)
	if err != nil {
		return res, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	if res.Transactions, res.TPS, res.LatencyAvgMS, err = parsePGBench(string(out)); err != nil {
		return res, err
	}
	res.PGCPUPercent = 100 * cpu.Seconds() / elapsed.Seconds()
	res.WAL = walUse(walBefore, walAfter, elapsed, res.Transactions)
	if res.Transactions > 0 {
		res.PGCPUPerRow = float64(cpu.Microseconds()) / float64(res.Transactions)
	}
	return res, nil
}

var (
	pgbenchTxRe  = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	pgbenchTPSRe = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	pgbenchLatRe = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
)

// parsePGBench reads pgbench's summary: transactions processed, tps and
// the average latency.
func parsePGBench(out string) (tx int64, tps, latencyMS float64, err error) {
	m := pgbenchTxRe.FindStringSubmatch(out)
	t := pgbenchTPSRe.FindStringSubmatch(out)
	if m != nil && m[1] == "0" {
		return 0, 0, 0, fmt.Errorf("pgbench committed no transaction (its connections may have taken the whole run on a busy machine):\n%s", out)
	}
	if m == nil || t == nil {
		return 0, 0, 0, fmt.Errorf("pgbench: no summary in its output:\n%s", out)
	}
	tx, _ = strconv.ParseInt(m[1], 10, 64)
	tps, _ = strconv.ParseFloat(t[1], 64)
	if l := pgbenchLatRe.FindStringSubmatch(out); l != nil {
		latencyMS, _ = strconv.ParseFloat(l[1], 64)
	}
	return tx, tps, latencyMS, nil
}

// ChangeLogStats is what a scenario's change log weighs in PostgreSQL and
// what compacting it costs, through calsync's own compaction
// (store/postgres CompactChanges, the code the leader runs).
type ChangeLogStats struct {
	Changes int64 `json:"changes"`
	// Bytes are the changes table with its indexes and TOAST.
	Bytes          int64   `json:"bytes"`
	BytesPerChange float64 `json:"bytes_per_change"`
	// Deliveries and DeliveryBytes are the inbox, for the same run.
	Deliveries       int64   `json:"deliveries"`
	DeliveryBytes    int64   `json:"delivery_bytes"`
	BytesPerDelivery float64 `json:"bytes_per_delivery"`
	// DatabaseBytes is the whole database.
	DatabaseBytes int64 `json:"database_bytes"`
	// Compacted changes were removed in CompactSeconds, then VACUUM of the
	// table took VacuumSeconds; PGCPUPerChange is the server's CPU for both,
	// per change removed.
	Compacted          int64   `json:"compacted"`
	CompactSeconds     float64 `json:"compact_s"`
	CompactUSPerChange float64 `json:"compact_us_per_change"`
	VacuumSeconds      float64 `json:"vacuum_s"`
	PGCPUPerChange     float64 `json:"postgres_cpu_us_per_change_compacted"`
}

// measureChangeLog sizes the change log and inbox of the database at url,
// then compacts every change but the newest, as the leader does once they
// are older than --change-retention, and vacuums the table.
func measureChangeLog(ctx context.Context, pg *pgServer, url string) (ChangeLogStats, error) {
	var st ChangeLogStats
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return st, err
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM changes), pg_total_relation_size('changes'),
		(SELECT count(*) FROM deliveries), pg_total_relation_size('deliveries'), pg_database_size(current_database())`).
		Scan(&st.Changes, &st.Bytes, &st.Deliveries, &st.DeliveryBytes, &st.DatabaseBytes)
	if err != nil {
		return st, err
	}
	if st.Changes > 0 {
		st.BytesPerChange = float64(st.Bytes) / float64(st.Changes)
	}
	if st.Deliveries > 0 {
		st.BytesPerDelivery = float64(st.DeliveryBytes) / float64(st.Deliveries)
	}
	db, err := postgres.Open(ctx, url, postgres.Options{MaxConns: 2})
	if err != nil {
		return st, err
	}
	defer db.Close()
	cpu, start := pg.CPU(), time.Now()
	st.Compacted, err = db.CompactChanges(ctx, time.Now().Add(time.Second))
	st.CompactSeconds = time.Since(start).Seconds()
	if err != nil {
		return st, err
	}
	vstart := time.Now()
	if _, err := conn.Exec(ctx, `VACUUM changes`); err != nil {
		return st, err
	}
	st.VacuumSeconds = time.Since(vstart).Seconds()
	if st.Compacted > 0 {
		st.CompactUSPerChange = st.CompactSeconds * 1e6 / float64(st.Compacted)
		st.PGCPUPerChange = float64((pg.CPU() - cpu).Microseconds()) / float64(st.Compacted)
	}
	return st, nil
}
