package main

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReferenceServer: the reference server answers a webhook only once its
// rows are committed, finds a redelivery by its dedupe key and writes
// nothing for it, turns away a postpress webhook without the secret, and
// writes a Recall hint's delivery alone.
func TestReferenceServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ref.db")
	s, err := newReferenceServer(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	post := func(provider string, body []byte, secret string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/webhooks/"+provider, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if secret != "" {
			req.Header.Set(postpressHeader, secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		answer, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(answer))
	}

	w := NewWorkload(2, 3)
	sent := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for i := range 3 {
		for ver := 1; ver <= 2; ver++ {
			if code, answer := post("postpress", w.postpressBody(i, ver, sent.Add(time.Duration(ver)*time.Second)), postpressSecret); code != http.StatusOK || answer != `{"duplicate":false}` {
				t.Fatalf("event %d version %d: %d %s", i, ver, code, answer)
			}
		}
	}
	again := w.postpressBody(0, 2, sent.Add(2*time.Second))
	if code, answer := post("postpress", again, postpressSecret); code != http.StatusOK || answer != `{"duplicate":true}` {
		t.Fatalf("redelivery: %d %s, want 200 and a duplicate", code, answer)
	}
	if code, _ := post("postpress", w.postpressBody(1, 3, sent), "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d, want 401", code)
	}
	if code, answer := post("recall", []byte(`{"event":"calendar.sync_events","data":{"calendar_id":"cal_1"}}`), ""); code != http.StatusOK || answer != `{"duplicate":false}` {
		t.Fatalf("recall hint: %d %s", code, answer)
	}
	srv.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	count := func(q string) int {
		t.Helper()
		var n int
		if err := db.QueryRow(q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, c := range []struct {
		q    string
		want int
	}{
		{`SELECT count(*) FROM deliveries WHERE provider = 'postpress' AND state = 2`, 6},
		{`SELECT count(*) FROM deliveries WHERE provider = 'recall' AND state = 1`, 1},
		{`SELECT count(*) FROM events`, 3},
		{`SELECT count(*) FROM changes`, 6},
		{`SELECT count(*) FROM events WHERE raw = (SELECT body FROM deliveries WHERE provider = 'postpress' ORDER BY id DESC LIMIT 1)`, 1},
	} {
		if got := count(c.q); got != c.want {
			t.Errorf("%s = %d, want %d", c.q, got, c.want)
		}
	}
}
