package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// TestHealthWatchLimit opens unauthenticated health watches on one
// connection: beyond --max-health-watches they are refused, counted, and
// a slot freed is taken again.
func TestHealthWatchLimit(t *testing.T) {
	cfg := defaultTestConfig(t)
	cfg.maxHealthWatches = 3
	ts := mustServe(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	health := grpc_health_v1.NewHealthClient(ts.conn)
	watch := func(ctx context.Context) error {
		s, err := health.Watch(ctx, &grpc_health_v1.HealthCheckRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		return err
	}
	cancels := make([]context.CancelFunc, 3)
	for i := range cancels {
		var wctx context.Context
		wctx, cancels[i] = context.WithCancel(ctx)
		defer cancels[i]()
		if err := watch(wctx); err != nil {
			t.Fatalf("health watch %d: %v", i+1, err)
		}
	}
	if err := watch(ctx); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("health watch over the limit = %v, want RESOURCE_EXHAUSTED", err)
	}
	if got := scrape(t, ts.url("/metrics"), "")["calsync_health_watches_rejected_total"]; got != 1 {
		t.Errorf("calsync_health_watches_rejected_total = %v, want 1", got)
	}
	// Health checks are not watches: they still work.
	if _, err := health.Check(ctx, &grpc_health_v1.HealthCheckRequest{}); err != nil {
		t.Errorf("health check at the watch limit: %v", err)
	}
	cancels[0]()
	eventually(t, "a freed health watch slot", func() bool {
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		return watch(wctx) == nil
	})
}

// TestStreamsPerConnectionAdvertised reads the server's HTTP/2 SETTINGS
// off the wire: the per-connection stream limit is announced to clients,
// which then never open more.
func TestStreamsPerConnectionAdvertised(t *testing.T) {
	cfg := defaultTestConfig(t)
	cfg.maxStreamsPerConn = 7
	ts := mustServe(t, cfg)
	conn, err := net.Dial("tcp", ts.grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	// The client preface, then an empty SETTINGS frame.
	if _, err := conn.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	for {
		var head [9]byte
		if _, err := io.ReadFull(r, head[:]); err != nil {
			t.Fatalf("no SETTINGS from the server: %v", err)
		}
		length := int(head[0])<<16 | int(head[1])<<8 | int(head[2])
		payload := make([]byte, length)
		if _, err := io.ReadFull(r, payload); err != nil {
			t.Fatal(err)
		}
		const frameSettings, flagAck, settingMaxConcurrentStreams = 4, 1, 3
		if head[3] != frameSettings || head[4]&flagAck != 0 {
			continue
		}
		for i := 0; i+6 <= len(payload); i += 6 {
			if binary.BigEndian.Uint16(payload[i:]) == settingMaxConcurrentStreams {
				if got := binary.BigEndian.Uint32(payload[i+2:]); got != 7 {
					t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want 7", got)
				}
				return
			}
		}
		t.Fatal("the server's SETTINGS carry no SETTINGS_MAX_CONCURRENT_STREAMS: a client may open streams without bound")
	}
}

// TestSilentConnectionsClosed connects to every listener and sends
// nothing: each closes the connection once --handshake-timeout has passed.
func TestSilentConnectionsClosed(t *testing.T) {
	cfg := defaultTestConfig(t)
	cfg.handshakeTimeout = 300 * time.Millisecond
	cfg.pprofAddr = "127.0.0.1:0"
	cfg.metricsAddr = "127.0.0.1:0"
	ts := mustServe(t, cfg)
	for name, addr := range map[string]string{
		"gRPC":    ts.grpcAddr,
		"HTTP":    ts.httpAddr,
		"metrics": addrFromLogs(t, ts.logs.String(), "metrics_addr"),
		"pprof":   addrFromLogs(t, ts.logs.String(), "pprof_addr"),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			requireClosedWhenSilent(t, addr, cfg.handshakeTimeout)
		})
	}
}

// requireClosedWhenSilent connects to addr, sends nothing, and requires the
// server to close the connection after about timeout, well before a
// generous deadline.
func requireClosedWhenSilent(t *testing.T, addr string, timeout time.Duration) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	began := time.Now()
	conn.SetReadDeadline(began.Add(5 * time.Second))
	_, err = io.Copy(io.Discard, conn) // what the server sends, until it closes
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a silent connection to %s is still open after %v", addr, time.Since(began))
	}
	if took := time.Since(began); took < timeout/2 {
		t.Errorf("closed after %v, before the %v timeout: %v", took, timeout, err)
	}
}

// addrFromLogs reads a listener's address (key: "metrics_addr",
// "pprof_addr") from the "calsync listening" log line.
func addrFromLogs(t *testing.T, logs, key string) string {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		if i := strings.Index(line, `"`+key+`":"`); i >= 0 {
			rest := line[i+len(key)+4:]
			return rest[:strings.Index(rest, `"`)]
		}
	}
	t.Fatalf("no %s in the logs:\n%s", key, logs)
	return ""
}

// TestRequestBodyLimit sends every REST route a body over the bound of
// API requests: each is refused with 413 before the gateway reads it, and
// a streamed body is not read to its end.
func TestRequestBodyLimit(t *testing.T) {
	ts := mustServe(t, defaultTestConfig(t))
	big := append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("a"), 1<<20)...), `"}`...)
	for _, r := range apiRoutes {
		// Bounded in time: a watch that took the request would stream.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, err := http.NewRequestWithContext(ctx, r.method, ts.url(r.path), bytes.NewReader(big))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", r.method, r.path, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		resp.Body.Close()
		cancel()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "request body exceeds 65536 bytes") {
			t.Errorf("%s %s with a 1 MiB body = %d %s, want 413", r.method, r.path, resp.StatusCode, body)
		}
	}
	// A small body is still read and used.
	if code, body := httpDo(t, http.MethodPost, ts.url("/v1/deliveries/1:retry"), []byte(`{}`), nil); code != http.StatusNotFound {
		t.Errorf("retry of an unknown delivery = %d %s, want 404", code, body)
	}

	// A chunked body of unknown length, sent until the server answers.
	const limit = 64 << 20
	conn, err := net.Dial("tcp", ts.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	var sent atomic.Int64
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		w := bufio.NewWriter(conn)
		fmt.Fprintf(w, "POST /v1/calendars/%s:resync HTTP/1.1\r\nHost: calsync\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", someCal)
		chunk := bytes.Repeat([]byte("a"), 32<<10)
		fmt.Fprintf(w, "8\r\n{\"pad\":\"\r\n")
		for sent.Load() < limit {
			fmt.Fprintf(w, "%x\r\n%s\r\n", len(chunk), chunk)
			if w.Flush() != nil {
				return
			}
			sent.Add(int64(len(chunk)))
		}
		fmt.Fprintf(w, "2\r\n\"}\r\n0\r\n\r\n")
		w.Flush()
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	conn.Close()
	<-writerDone
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("streamed :resync body = %d, want 413", resp.StatusCode)
	}
	if n := sent.Load(); n >= limit {
		t.Errorf("the server read the whole %d-byte body before answering", n)
	}
}

// TestMethodNotAllowed sends REST paths methods they do not take: 405 with
// the methods they do take in Allow, where the gateway would say 501.
func TestMethodNotAllowed(t *testing.T) {
	ts := mustServe(t, defaultTestConfig(t))
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodDelete, "/v1/calendars", "GET"},
		{http.MethodPut, "/v1/webhooks/postpress", "POST"},
		{http.MethodPost, "/v1/calendars/" + someCal, "GET"},
		{http.MethodPatch, "/v1/deliveries/1:retry", "POST"},
		{http.MethodDelete, "/v1/events:watch", "GET"},
		{http.MethodPost, "/healthz", "GET"},
	} {
		req, err := http.NewRequest(c.method, ts.url(c.path), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != c.allow {
			t.Errorf("%s %s = %d, Allow %q: %s; want 405, Allow %q", c.method, c.path, resp.StatusCode, resp.Header.Get("Allow"), body, c.allow)
		}
	}
	// A form posted to a GET route is no GET.
	form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	if code, body := httpDo(t, http.MethodPost, ts.url("/v1/calendars"), []byte("page_size=1"), form); code != http.StatusMethodNotAllowed {
		t.Errorf("POST of a form to /v1/calendars = %d %s, want 405", code, body)
	}
	if code, body := httpDo(t, http.MethodGet, ts.url("/v1/nothing-here"), nil, nil); code != http.StatusNotFound {
		t.Errorf("GET of an unknown path = %d %s, want 404", code, body)
	}
}

// TestTrailingDataAfterJSONBody posts REST bodies with something after
// their JSON: 400, where the rest used to be ignored. White space after it
// is no trailing data, and a webhook's body is taken as it is.
func TestTrailingDataAfterJSONBody(t *testing.T) {
	ts := mustServe(t, defaultTestConfig(t))
	for _, body := range []string{`{} {}`, `{}x`, `{"delivery_id":"1"}]`} {
		code, got := httpDo(t, http.MethodPost, ts.url("/v1/deliveries/1:retry"), []byte(body), nil)
		if code != http.StatusBadRequest || !strings.Contains(string(got), "unexpected data after request body") {
			t.Errorf("retry with body %q = %d %s, want 400", body, code, got)
		}
	}
	for _, body := range []string{``, `{}`, "{}\n\t ", `{"delivery_id":"1"}`} {
		if code, got := httpDo(t, http.MethodPost, ts.url("/v1/deliveries/1:retry"), []byte(body), nil); code != http.StatusNotFound {
			t.Errorf("retry of an unknown delivery with body %q = %d %s, want 404", body, code, got)
		}
	}
	if code, got := httpDo(t, http.MethodPost, ts.url("/v1/calendars/"+someCal+":resync"), []byte(`{}{}`), nil); code != http.StatusBadRequest {
		t.Errorf("resync with two JSON objects = %d %s, want 400", code, got)
	}
}

// TestEncodedWebhookRefused sends a gzip-compressed webhook: 415 at once,
// nothing stored, counted.
func TestEncodedWebhookRefused(t *testing.T) {
	ts := postpressServer(t)
	body := readTestdata(t, "postpress_created.json")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(body)
	zw.Close()
	for _, encoding := range []string{"gzip", "br", "identity, gzip"} {
		h := ppAuth()
		h.Set("Content-Encoding", encoding)
		req, err := http.NewRequest(http.MethodPost, ts.url("/v1/webhooks/postpress"), bytes.NewReader(gz.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType || resp.Header.Get("Accept-Encoding") != "identity" {
			t.Errorf("webhook in Content-Encoding %q = %d (Accept-Encoding %q): %s; want 415", encoding, resp.StatusCode, resp.Header.Get("Accept-Encoding"), answer)
		}
	}
	if ds := listDeliveries(t, ts); len(ds) != 0 {
		t.Fatalf("refused webhooks were stored: %v", ds)
	}
	if got := scrape(t, ts.url("/metrics"), "")[`calsync_webhooks_received_total{outcome="unsupported_encoding",provider="postpress"}`]; got != 3 {
		t.Errorf("unsupported_encoding webhooks counted = %v, want 3", got)
	}
	// The identity coding is no coding: accepted.
	h := ppAuth()
	h.Set("Content-Encoding", "identity")
	if code, answer := postWebhook(t, ts, "postpress", body, h); code != http.StatusOK {
		t.Errorf("webhook in Content-Encoding identity = %d: %s", code, answer)
	}
}

// TestWebhookRejectionsLogSampled floods the server with webhooks bearing
// wrong credentials, over REST and gRPC, at the default log level: a
// handful of log lines at most, and every rejection counted.
func TestWebhookRejectionsLogSampled(t *testing.T) {
	ts := postpressServer(t, func(c *serveConfig) { c.logLevel = "info" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before := strings.Count(ts.logs.String(), "\n")
	const perPath = 150
	body := readTestdata(t, "postpress_created.json")
	for range perPath {
		if code, answer := postWebhook(t, ts, "postpress", body, http.Header{"Postpress-Auth": {"wrong"}}); code != http.StatusUnauthorized {
			t.Fatalf("webhook with a wrong secret = %d: %s", code, answer)
		}
	}
	webhooks := calsyncv1.NewWebhookServiceClient(ts.conn)
	wrong := metadata.AppendToOutgoingContext(ctx, "postpress-auth", "wrong")
	for range perPath {
		_, err := webhooks.IngestWebhook(wrong, &calsyncv1.IngestWebhookRequest{Provider: "postpress", Body: &httpbody.HttpBody{Data: body}})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("gRPC webhook with a wrong secret = %v", err)
		}
	}
	got := scrape(t, ts.url("/metrics"), "")[`calsync_webhooks_received_total{outcome="unauthenticated",provider="postpress"}`]
	if got != 2*perPath {
		t.Errorf("unauthenticated webhooks counted = %v, want %d", got, 2*perPath)
	}
	logs := ts.logs.String()
	lines := strings.Split(logs, "\n")
	flood := lines[before:]
	if n := len(flood) - 1; n > 2 {
		t.Errorf("%d rejected webhooks wrote %d log lines, want at most 2:\n%s", 2*perPath, n, strings.Join(flood[:min(len(flood), 6)], "\n"))
	}
	if !strings.Contains(logs, `"msg":"webhook rejected"`) {
		t.Errorf("no rejection was logged at all")
	}
}

// TestPprofGuarded runs the real binary with secrets in its command line
// and --pprof-addr: the command line is never served, every profile needs
// the API's token, and a silent connection is closed.
func TestPprofGuarded(t *testing.T) {
	const recallKey = "rk-pprof-3c9d1e"
	p := startBinary(t, nil, "--db", t.TempDir()+"/calsync.db", "--pprof-addr", "127.0.0.1:0",
		"--api-tokens", goodToken, "--recall-api-key", recallKey, "--recall-webhook-secrets", recallSecret,
		"--postpress-auth-secrets", postpressSecret, "--handshake-timeout", "300ms")
	defer p.stop(t)
	base := "http://" + addrFromLogs(t, p.logs.String(), "pprof_addr") + "/debug/pprof/"
	auth := http.Header{"Authorization": {"Bearer " + goodToken}}
	for _, path := range []string{"", "cmdline", "heap?debug=1", "goroutine?debug=2", "symbol"} {
		code, body := httpDo(t, http.MethodGet, base+path, nil, nil)
		if code != http.StatusUnauthorized {
			t.Errorf("GET %s without a token = %d, want 401", path, code)
		}
		code, body = httpDo(t, http.MethodGet, base+path, nil, auth)
		if want := http.StatusOK; path == "cmdline" && code != http.StatusNotFound || path != "cmdline" && code != want {
			t.Errorf("GET %s with a token = %d: %.200s", path, code, body)
		}
		for _, secret := range []string{recallKey, goodToken, postpressSecret, strings.TrimPrefix(recallSecret, "whsec_")} {
			if bytes.Contains(body, []byte(secret)) {
				t.Errorf("GET %s shows a secret of the command line", path)
			}
		}
	}
	requireClosedWhenSilent(t, addrFromLogs(t, p.logs.String(), "pprof_addr"), 300*time.Millisecond)
}

// TestPprofTLS serves pprof with TLS configured: over TLS only.
func TestPprofTLS(t *testing.T) {
	pki := mustPKI(t)
	cfg := defaultTestConfig(t)
	cfg.tlsCert, cfg.tlsKey = pki.serverCert, pki.serverKey
	cfg.pprofAddr = "127.0.0.1:0"
	ts := mustServe(t, cfg)
	addr := addrFromLogs(t, ts.logs.String(), "pprof_addr")
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.tlsClient(t, "", "")}}
	resp, err := tlsClient.Get("https://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("pprof over TLS = %d", resp.StatusCode)
	}
	if code, _ := httpDo(t, http.MethodGet, "http://"+addr+"/debug/pprof/heap?debug=1", nil, nil); code == http.StatusOK {
		t.Errorf("pprof answered over plain HTTP with TLS configured")
	}
}

// TestRESTNotCappedPerConnection opens more REST watches than one gRPC
// connection may carry streams: every REST call reaches gRPC over one
// in-process connection, which the per-connection limit must not cap.
func TestRESTNotCappedPerConnection(t *testing.T) {
	cfg := defaultTestConfig(t)
	cfg.maxStreamsPerConn = 2
	ts := mustServe(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 4 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.url("/v1/events:watch"), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("REST watch %d: %v", i+1, err)
		}
		defer resp.Body.Close()
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("REST watch %d = %d, %v", i+1, resp.StatusCode, err)
		}
	}
}
