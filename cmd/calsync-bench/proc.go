package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is the kernel's USER_HZ, the unit of utime and stime in
// /proc/<pid>/stat; it is 100 on every Linux this tool runs on.
const clockTicks = 100

// ProcStats is what the kernel reports about a child server.
type ProcStats struct {
	// CPU is user plus system time consumed so far.
	CPU time.Duration
	// RSS is the resident set size in bytes.
	RSS int64
	// clientCPU is this tool's own CPU time when the stats were read, so
	// the load generator's share of the machine can be reported too.
	clientCPU time.Duration
	// ioStall is the machine's ioStallTotal when the stats were read.
	ioStall time.Duration
}

// readProcStats reads /proc/<pid>/stat (CPU) and /proc/<pid>/status (RSS).
func readProcStats(pid int) (ProcStats, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcStats{}, err
	}
	// The command name (field 2) may hold spaces; fields after it start
	// after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return ProcStats{}, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return ProcStats{}, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcStats{}, err
	}
	var rss int64
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			rss = kb * 1024
		}
	}
	return ProcStats{CPU: time.Duration(ut+st) * time.Second / clockTicks, RSS: rss}, nil
}

// statsWithClient reads a child's stats together with this process's CPU.
func statsWithClient(pid int) ProcStats {
	s, _ := readProcStats(pid)
	if self, err := readProcStats(os.Getpid()); err == nil {
		s.clientCPU = self.CPU
	}
	s.ioStall, _ = ioStallTotal()
	return s
}

// ioStallTotal reads how long, since boot, every task of the machine that
// had work to do was waiting for I/O at once (the "full" line of Linux's
// pressure stall information, /proc/pressure/io). A disk that stalls shows
// there whoever caused the stall, so a latency run's tail can be told apart
// from calsync's own work.
func ioStallTotal() (time.Duration, error) {
	b, err := os.ReadFile("/proc/pressure/io")
	if err != nil {
		return 0, err
	}
	return parseFullStall(b)
}

// parseFullStall reads the total of the "full" line of a pressure file.
func parseFullStall(b []byte) (time.Duration, error) {
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "full ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "total="); ok {
				us, err := strconv.ParseInt(v, 10, 64)
				return time.Duration(us) * time.Microsecond, err
			}
		}
	}
	return 0, errors.New("no full total in the pressure file")
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Child is a server process the tool started and measures.
type Child struct {
	Name     string
	GRPCAddr string
	HTTPAddr string
	// DB is the database of a calsync the tool started.
	DB  string
	cmd *exec.Cmd
	// exited is closed once the process has ended and been waited for, so
	// any number of Kill and Stop calls can wait on it.
	exited  chan struct{}
	logPath string
}

// Pid returns the child's process id, or 0 for a server the tool did not
// start (--target).
func (c *Child) Pid() int {
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Stats reads the child's CPU and RSS; a targeted server reports zero.
func (c *Child) Stats() ProcStats {
	if c.cmd == nil {
		return ProcStats{}
	}
	return statsWithClient(c.Pid())
}

// RSS reads only the child's resident set size, for the peak sampler,
// which runs ten times a second and needs nothing else.
func (c *Child) RSS() int64 {
	if c.cmd == nil {
		return 0
	}
	s, _ := readProcStats(c.Pid())
	return s.RSS
}

// Kill ends the child with SIGKILL, as a crash would, and waits for it.
func (c *Child) Kill() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// Stop asks the child to shut down cleanly, and kills it after timeout.
func (c *Child) Stop(timeout time.Duration) {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(timeout):
		c.Kill()
	}
}

// startChild starts argv with env and waits until health answers 200 at
// healthURL.
func startChild(ctx context.Context, name string, argv, env []string, logDir, healthURL string) (*Child, error) {
	logPath := filepath.Join(logDir, fileName(name)+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A server must not outlive the tool: if the tool is killed, the
	// kernel kills its servers too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	c := &Child{Name: name, cmd: cmd, exited: make(chan struct{}), logPath: logPath}
	var waitErr error
	go func() { waitErr = cmd.Wait(); logf.Close(); close(c.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-c.exited:
			return nil, fmt.Errorf("%s exited during start (%v); see %s", name, waitErr, logPath)
		default:
		}
		if resp, err := http.Get(healthURL); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.Kill()
			return nil, fmt.Errorf("%s not healthy after 30s; see %s", name, logPath)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CalsyncOptions are the settings a benchmark starts calsync with.
type CalsyncOptions struct {
	Bin, DB, LogDir string
	MaxBatch        int
	Synchronous     string
	RecallURL       string
	RecallKey       string
	PprofAddr       string
	Workers         int
	GRPCAddr        string
	HTTPAddr        string
}

// Secrets shared by the load generator and the servers it starts.
const (
	recallSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	postpressHeader = "Postpress-Auth"
	postpressSecret = "bench-postpress-secret"
)

// startCalsync runs `calsync serve` with o on free ports, configured
// through flags exactly as an operator would.
func startCalsync(ctx context.Context, name string, o CalsyncOptions) (*Child, error) {
	if o.GRPCAddr == "" {
		o.GRPCAddr, o.HTTPAddr = freeAddr(), freeAddr()
	}
	if o.Synchronous == "" {
		o.Synchronous = "FULL"
	}
	argv := []string{o.Bin, "serve",
		"--grpc-addr", o.GRPCAddr, "--http-addr", o.HTTPAddr, "--db", o.DB,
		"--sqlite-synchronous", o.Synchronous, "--log-level", "warn",
		"--sqlite-max-batch", strconv.Itoa(o.MaxBatch),
		"--recall-webhook-secrets", recallSecret,
		"--postpress-auth-header", postpressHeader, "--postpress-auth-secrets", postpressSecret,
	}
	if o.RecallURL != "" {
		argv = append(argv, "--recall-api-url", o.RecallURL, "--recall-api-key", o.RecallKey)
	}
	if o.PprofAddr != "" {
		argv = append(argv, "--pprof-addr", o.PprofAddr)
	}
	if o.Workers > 0 {
		argv = append(argv, "--workers", strconv.Itoa(o.Workers))
	}
	c, err := startChild(ctx, name, argv, nil, o.LogDir, "http://"+o.HTTPAddr+"/healthz")
	if err != nil {
		return nil, err
	}
	c.GRPCAddr, c.HTTPAddr, c.DB = o.GRPCAddr, o.HTTPAddr, o.DB
	return c, nil
}

// buildCalsync compiles the calsync binary into dir, so the benchmark
// measures exactly what `make build` ships.
func buildCalsync(dir string) (string, error) {
	bin := filepath.Join(dir, "calsync")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/calsync")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build calsync (run from the repository root): %w", err)
	}
	return bin, nil
}

// fileName turns a scenario name into something safe to use as a file name.
func fileName(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, name)
}
