package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// testServer is calsync serving in-process on free ports, through the same
// code path as `calsync serve`.
type testServer struct {
	grpcAddr, httpAddr string
	conn               *grpc.ClientConn
	logs               *syncBuffer
	stop               func()
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// defaultTestConfig is serveConfig's defaults with free ports and a
// database in a temporary folder.
func defaultTestConfig(t *testing.T) serveConfig {
	t.Helper()
	var cfg serveConfig
	fs := newFlagSet()
	cfg.register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	cfg.grpcAddr, cfg.httpAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.dbPath = filepath.Join(t.TempDir(), "calsync.db")
	cfg.logLevel = "debug"
	return cfg
}

// mustServe starts calsync with cfg and stops it when the test ends.
func mustServe(t *testing.T, cfg serveConfig) *testServer {
	t.Helper()
	ts := &testServer{logs: &syncBuffer{}}
	ready := make(chan struct{})
	cfg.ready = func(g, h string) {
		ts.grpcAddr, ts.httpAddr = g, h
		close(ready)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, ts.logs) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("serve exited early: %v\n%s", err, ts.logs)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatalf("serve did not start\n%s", ts.logs)
	}
	conn, err := grpc.NewClient(ts.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ts.conn = conn
	var once sync.Once
	ts.stop = func() {
		once.Do(func() {
			conn.Close()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) url(path string) string { return "http://" + ts.httpAddr + path }

// httpDo sends a request with a real HTTP client and returns the status and
// body.
func httpDo(t *testing.T, method, url string, body []byte, header http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// getJSON GETs url, requires status want, and decodes the body into v.
func getJSON(t *testing.T, url string, want int, v any) {
	t.Helper()
	code, body := httpDo(t, http.MethodGet, url, nil, nil)
	if code != want {
		t.Fatalf("GET %s = %d, want %d: %s", url, code, want, body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, body)
		}
	}
}

// eventually retries f until it returns true or the deadline passes.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// buildBinary compiles calsync once per test binary run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "calsync-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "calsync")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", &buildError{out: string(out), err: err}
	}
	return bin, nil
})

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// process is the real calsync binary running `serve`.
type process struct {
	cmd                *exec.Cmd
	grpcAddr, httpAddr string
	logs               *syncBuffer
	exited             chan error
}

// startBinary runs `calsync serve` with args and env and waits until it
// listens, reading the ports from its "calsync listening" log line.
func startBinary(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, logs: &syncBuffer{}, exited: make(chan error, 1)}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.logs.Write([]byte(line + "\n"))
			var entry struct {
				Msg      string `json:"msg"`
				GRPCAddr string `json:"grpc_addr"`
				HTTPAddr string `json:"http_addr"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "calsync listening" {
				p.grpcAddr, p.httpAddr = entry.GRPCAddr, entry.HTTPAddr
				close(listening)
			}
		}
		p.exited <- cmd.Wait()
	}()
	select {
	case <-listening:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("calsync did not start:\n%s", p.logs)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})
	return p
}

// stop sends SIGTERM and requires a clean exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("calsync exited with %v:\n%s", err, p.logs)
		}
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("calsync did not stop:\n%s", p.logs)
	}
	if !strings.Contains(p.logs.String(), "calsync stopped") {
		t.Errorf("no orderly shutdown in the logs:\n%s", p.logs)
	}
}

func (p *process) url(path string) string { return "http://" + p.httpAddr + path }

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// listEventsREST GETs a ListEvents URL and decodes it as the API message.
func listEventsREST(t *testing.T, url string) *calsyncv1.ListEventsResponse {
	t.Helper()
	code, body := httpDo(t, http.MethodGet, url, nil, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s = %d: %s", url, code, body)
	}
	var resp calsyncv1.ListEventsResponse
	if err := protojson.Unmarshal(body, &resp); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, body)
	}
	return &resp
}

func unmarshalProto(t *testing.T, b []byte, m proto.Message) {
	t.Helper()
	if err := protojson.Unmarshal(b, m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}

// getProto GETs url, requires 200 and decodes the body as m.
func getProto(t *testing.T, url string, m proto.Message) {
	t.Helper()
	code, body := httpDo(t, http.MethodGet, url, nil, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s = %d: %s", url, code, body)
	}
	unmarshalProto(t, body, m)
}

// fullConfig is a server with every provider configured against fake
// (Recall's API included) and API tokens required.
func fullConfig(t *testing.T, fake *recalltest.Server) serveConfig {
	t.Helper()
	cfg := defaultTestConfig(t)
	cfg.apiTokens = goodToken
	cfg.postpressAuthSecrets = postpressSecret
	cfg.recallWebhookSecrets = recallSecret
	cfg.recallAPIURL, cfg.recallAPIKey = fake.URL, fake.APIKey()
	return cfg
}
