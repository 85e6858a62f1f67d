package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRawConn: the load's HTTP client sends what net/http's server reads
// as the request it meant (method, path, headers, body) over one kept-alive
// connection; it reads answers of every framing the server writes
// (Content-Length, chunked, Connection: close), and dials again after the
// server closed the connection.
func TestRawConn(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Svix-Id") != "msg_1" || r.Host == "" || string(body) != `{"n":1}` {
			http.Error(w, "unexpected request "+r.Method+" "+r.Header.Get("Svix-Id"), http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/chunked":
			w.WriteHeader(http.StatusAccepted)
			w.(http.Flusher).Flush() // no Content-Length: the body is chunked
			io.WriteString(w, strings.Repeat("x", 10000))
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		default:
			io.WriteString(w, `{"ok":true}`)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	c, err := newRawConn(srv.URL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ctx := context.Background()
	hdr := []header{{"svix-id", "msg_1"}}
	for i, tc := range []struct {
		path   string
		status int
		conns  int64
	}{
		{"/", 200, 1}, {"/", 200, 1}, {"/chunked", 202, 1}, {"/", 200, 1},
		{"/close", 200, 1}, {"/", 200, 2}, {"/", 200, 2},
	} {
		st, err := c.post(ctx, tc.path, hdr, []byte(`{"n":1}`))
		if err != nil || st != tc.status {
			t.Fatalf("request %d to %s: %d, %v; want %d", i, tc.path, st, err, tc.status)
		}
		if got := conns.Load(); got != tc.conns {
			t.Fatalf("after request %d to %s: %d connections; want %d", i, tc.path, got, tc.conns)
		}
	}
	if st, err := c.post(ctx, "/", []header{{"svix-id", "other"}}, nil); err != nil || st != http.StatusBadRequest {
		t.Fatalf("a request the server refuses: %d, %v; want 400", st, err)
	}

	// The server goes away: the request fails, and the next one dials
	// again once it is back.
	srv.CloseClientConnections()
	srv.Close()
	if _, err := c.post(ctx, "/", hdr, nil); err == nil {
		t.Fatal("a request to a closed server succeeded")
	}
	if c.conn != nil {
		t.Fatal("a failed request left its connection open")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.post(cancelled, "/", hdr, nil); err == nil {
		t.Fatal("a request with a cancelled context was sent")
	}
}
