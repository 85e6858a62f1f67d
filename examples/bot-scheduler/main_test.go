package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/provider/postpress"
	"github.com/calsync/calsync/server"
	"github.com/calsync/calsync/store/testdb"
)

// calsync is a real calsync taking postpress webhooks, which the test can
// restart on the same database and addresses.
type calsync struct {
	t                  *testing.T
	path               string
	grpcAddr, httpAddr string
	stop               func()
}

func (c *calsync) start() {
	c.t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := testdb.Open(c.path)
	if err != nil {
		c.t.Fatal(err)
	}
	auth, err := postpress.NewAuthenticator("Postpress-Auth", []string{"secret"})
	if err != nil {
		c.t.Fatal(err)
	}
	proc := ingest.NewProcessor(db, ingest.ProcessorConfig{Logger: log})
	srv, err := server.New(server.Config{GRPCAddr: c.grpcAddr, HTTPAddr: c.httpAddr, WebhookHeaders: []string{"Postpress-Auth"}},
		server.Deps{Store: db, Logger: log, Processor: proc,
			Receiver: ingest.NewReceiver(db, ingest.ReceiverConfig{Postpress: auth, Notify: proc.Notify})})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { proc.Run(ctx); close(done) }()
	c.grpcAddr, c.httpAddr = srv.GRPCAddr(), srv.HTTPAddr()
	var once sync.Once
	c.stop = func() {
		once.Do(func() {
			srv.Shutdown(context.Background())
			cancel()
			<-done
			db.Close()
		})
	}
}

// webhook sends a postpress event webhook over HTTP and requires 200.
func (c *calsync) webhook(kind, id, title, location string, start time.Time, cancelled bool, version int) {
	c.t.Helper()
	body, _ := json.Marshal(map[string]any{
		"event": kind, "account_id": "acct", "calendar_id": "owner@example.com", "id": id,
		"title": title, "location": location, "is_cancelled": cancelled,
		"start":      map[string]string{"date_time": start.Format(time.RFC3339), "time_zone": "UTC"},
		"end":        map[string]string{"date_time": start.Add(time.Hour).Format(time.RFC3339), "time_zone": "UTC"},
		"created_at": "2026-01-01T00:00:00Z", "updated_at": time.Date(2026, 1, 1, 0, 0, version, 0, time.UTC).Format(time.RFC3339),
	})
	req, _ := http.NewRequest(http.MethodPost, "http://"+c.httpAddr+"/v1/webhooks/postpress", bytes.NewReader(body))
	req.Header.Set("Postpress-Auth", "secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("webhook: %d", resp.StatusCode)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestBotScheduler runs the bot against a real calsync and drives it with
// postpress webhooks, restarting calsync half way.
func TestBotScheduler(t *testing.T) {
	cs := &calsync{t: t, path: filepath.Join(t.TempDir(), "calsync.db"), grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0"}
	cs.start()
	t.Cleanup(func() { cs.stop() })
	tomorrow := time.Now().UTC().Truncate(time.Hour).Add(24 * time.Hour)
	meet := "https://meet.google.com/abc-defg-hij"
	cs.webhook(postpress.EventCreated, "standup", "Standup", meet, tomorrow, false, 1)
	cs.webhook(postpress.EventCreated, "lunch", "Lunch", "Cafeteria", tomorrow, false, 1)
	cs.webhook(postpress.EventCreated, "retro", "Retro", "https://zoom.us/j/123456789", tomorrow.Add(3*time.Hour), false, 1)

	var out, logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cs.grpcAddr, &out, log.New(&logs, "", 0)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	expect := func(lines ...string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := out.String()
			ok := true
			for _, l := range lines {
				ok = ok && strings.Contains(got, l)
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the bot printed:\n%s\nwant lines containing %q", got, lines)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	at := func(tm time.Time) string { return tm.Format("Mon Jan 2 15:04 UTC") }
	expect(`scheduled  `+at(tomorrow)+` "Standup" `+meet, `scheduled  `+at(tomorrow.Add(3*time.Hour))+` "Retro"`)

	cs.webhook(postpress.EventUpdated, "standup", "Standup", meet, tomorrow.Add(time.Hour), false, 2)
	expect(`moved      ` + at(tomorrow.Add(time.Hour)) + ` "Standup" ` + meet + ` (was ` + at(tomorrow) + `)`)

	cs.stop()
	cs.start()
	cs.webhook(postpress.EventUpdated, "standup", "Standup", meet, tomorrow.Add(time.Hour), true, 3)
	cs.webhook(postpress.EventDeleted, "retro", "", "", tomorrow, false, 2)
	expect(`cancelled  `+at(tomorrow.Add(time.Hour))+` "Standup"`, `deleted    `+at(tomorrow.Add(3*time.Hour))+` "Retro"`)
	if strings.Contains(out.String(), "Lunch") {
		t.Errorf("the bot announced a meeting without a link:\n%s", out.String())
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("the bot never noticed calsync's restart; its logs:\n%s", logs.String())
	}
}
