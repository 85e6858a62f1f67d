// Package pgtest runs a private PostgreSQL server for the tests of one test
// binary and hands every test a fresh database on it.
//
// The server is started on first use, from the PostgreSQL 15 binaries in
// [BinDir] (Debian's `postgresql` package): initdb into a new temporary
// directory, then postgres listening on a free TCP port of 127.0.0.1 and on
// a Unix socket in that directory. fsync and synchronous_commit keep their
// durable defaults, so what the tests see is what production gets. As root,
// initdb and postgres run as the `postgres` user, which owns the directory.
//
// A test binary calls [Main] from its TestMain so the server stops when the
// tests end. If the binary is killed instead, the server does not outlive it:
// postgres is started with a parent-death signal, and the next start removes
// the directories (and stops the servers) of test binaries that are gone.
// A test never uses a server it did not start.
package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinDir holds initdb and postgres.
const BinDir = "/usr/lib/postgresql/15/bin"

// MaxConnections is the server's max_connections: room for every test of a
// binary running its stores (each a small pool) in parallel.
const MaxConnections = 300

// dirPrefix names the server directories, so a later start can find the
// ones left by killed test binaries.
const dirPrefix = "calsync-pgtest-"

// Server is a running private PostgreSQL server.
type Server struct {
	// Dir is the server's directory: data in Dir/data, the Unix socket in Dir.
	Dir string
	// Port is the TCP port on 127.0.0.1.
	Port int

	cmd    *exec.Cmd
	cred   *syscall.Credential
	exited chan struct{}
	admin  *pgx.Conn
	mu     sync.Mutex // Guards admin.
}

var (
	startOnce sync.Once
	shared    *Server
	startErr  error
	dbSeq     atomic.Int64
)

// Main runs the tests of m and then stops the server if one was started. Use
// it as `func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }`.
func Main(m *testing.M) int {
	code := m.Run()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop server: %v\n", err)
		}
	}
	return code
}

// Shared returns the binary's server, starting it on first use. The test
// fails (it never skips) when PostgreSQL is not installed or will not start.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	startOnce.Do(func() { shared, startErr = Start() })
	if startErr != nil {
		tb.Fatalf("pgtest: %v", startErr)
	}
	return shared
}

// NewDatabase creates a fresh database on the binary's server, dropped when
// the test ends, and returns its connection URL (TCP, no password).
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	s := Shared(tb)
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), dbSeq.Add(1))
	if err := s.exec(fmt.Sprintf(`CREATE DATABASE %s`, name)); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.exec(fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, name)); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return s.URL(name)
}

// URL returns the TCP connection URL of database name.
func (s *Server) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, name)
}

// SocketURL returns the connection URL of database name through the Unix
// socket.
func (s *Server) SocketURL(name string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d&sslmode=disable", name, s.Dir, s.Port)
}

func (s *Server) exec(sql string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := s.admin.Exec(ctx, sql)
	return err
}

// installHint tells how to get PostgreSQL when it is missing.
const installHint = "PostgreSQL 15 is needed for these tests: install it with `apt-get install postgresql` " +
	"(Debian/Ubuntu; it provides " + BinDir + "/initdb)"

// Start initdbs a new directory and starts a server in it. The caller must
// Stop it.
func Start() (*Server, error) {
	initdb := filepath.Join(BinDir, "initdb")
	if _, err := os.Stat(initdb); err != nil {
		return nil, fmt.Errorf("%s not found: %s", initdb, installHint)
	}
	cred, owner, err := runAs()
	if err != nil {
		return nil, err
	}
	removeOrphans()
	dir, err := os.MkdirTemp(baseDir(), dirPrefix)
	if err != nil {
		return nil, err
	}
	// The owner file lets a later start tell that this binary is gone.
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	if owner != nil {
		if err := os.Chown(dir, owner.uid, owner.gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	s := &Server{Dir: dir, cred: cred}
	if err := s.start(cred); err != nil {
		s.kill()
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

type ids struct{ uid, gid int }

// runAs returns the credential to run PostgreSQL with: as root, the
// postgres user (PostgreSQL refuses to run as root); otherwise the caller.
func runAs() (*syscall.Credential, *ids, error) {
	if os.Geteuid() != 0 {
		return nil, nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, nil, fmt.Errorf("running as root needs the postgres user: %v; %s", err, installHint)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, &ids{uid, gid}, nil
}

func (s *Server) start(cred *syscall.Credential) error {
	data := filepath.Join(s.Dir, "data")
	log := filepath.Join(s.Dir, "server.log")
	initdb := exec.Command(filepath.Join(BinDir, "initdb"), "-D", data, "-U", "postgres",
		"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		s.Port = port
		err = s.launch(data, log, cred)
		if err == nil {
			return nil
		}
		// Another process may have taken the port between the probe and
		// the server's bind.
		if attempt == 2 || !strings.Contains(err.Error(), "could not bind") {
			return err
		}
	}
}

func (s *Server) launch(data, logPath string, cred *syscall.Credential) error {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	s.cmd = exec.Command(filepath.Join(BinDir, "postgres"), "-D", data,
		"-p", strconv.Itoa(s.Port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+s.Dir,
		"-c", "max_connections="+strconv.Itoa(MaxConnections),
		"-c", "shared_buffers=64MB",
		"-c", "fsync=on",
		"-c", "synchronous_commit=on",
		"-c", "log_min_messages=warning",
	)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// Pdeathsig asks the kernel to stop the server (immediate shutdown) if
	// the test binary dies without stopping it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		cancel()
		if err == nil {
			s.admin = conn
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("postgres exited at start: %s", tail(logPath))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within a minute: %v; %s", err, tail(logPath))
		}
		// Poll the server's readiness: nothing signals it but a connection.
		time.Sleep(20 * time.Millisecond)
	}
}

// Restart stops the server (fast shutdown: sessions are cut, as in a
// failover) and starts it again on the same port and data. Tests that
// restart the binary's shared server must not run in parallel with others.
func (s *Server) Restart() error {
	if err := s.Halt(); err != nil {
		return err
	}
	return s.Resume()
}

// Halt stops the server (fast shutdown) and keeps its data, so that tests
// can see what happens while the database is unreachable; Resume starts it
// again. Tests that halt the binary's shared server must not run in
// parallel with others, and must Resume it before they end.
func (s *Server) Halt() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.admin.Close(context.Background())
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("postgres did not stop within 30s")
	}
}

// Resume starts a halted server again on the same port and data.
func (s *Server) Resume() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.launch(filepath.Join(s.Dir, "data"), filepath.Join(s.Dir, "server.log"), s.cred)
}

// Stop shuts the server down (fast shutdown) and removes its directory.
func (s *Server) Stop() error {
	if s.admin != nil {
		s.admin.Close(context.Background())
	}
	var err error
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			s.kill()
			err = errors.New("postgres did not stop within 30s; killed")
		}
	}
	return errors.Join(err, os.RemoveAll(s.Dir))
}

func (s *Server) kill() {
	if s.cmd != nil && s.cmd.Process != nil && s.exited != nil {
		s.cmd.Process.Kill()
		<-s.exited
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// removeOrphans stops the servers and removes the directories of test
// binaries that died without stopping theirs.
func removeOrphans() {
	dirs, _ := filepath.Glob(filepath.Join(baseDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue
		}
		owner, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || alive(owner) {
			continue
		}
		if pid, ok := postmasterPID(filepath.Join(dir, "data")); ok {
			syscall.Kill(pid, syscall.SIGQUIT)
		}
		os.RemoveAll(dir)
	}
}

// baseDir is where server directories go: the system's temporary
// directory, unless the postgres user could not reach it or the server's
// socket path would be too long for Unix (107 bytes), then /tmp.
func baseDir() string {
	d := os.TempDir()
	if len(d) > 60 || (os.Geteuid() == 0 && !traversable(d)) {
		return "/tmp"
	}
	return d
}

// traversable reports whether every directory from d up to the root lets
// other users through.
func traversable(d string) bool {
	for p := filepath.Clean(d); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if p == filepath.Dir(p) {
			return true
		}
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// postmasterPID reads the server's pid from its lock file.
func postmasterPID(data string) (int, bool) {
	f, err := os.Open(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
	return pid, err == nil && pid > 0
}

// tail returns the end of the server's log for error messages.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
