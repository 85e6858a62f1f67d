package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// updateConsoleDocs copies the console's screenshots into docs/ for the
// README: go test ./cmd/calsync -run TestConsoleInBrowser -update-console-docs
var updateConsoleDocs = flag.Bool("update-console-docs", false, "write the console's screenshots to docs/console-*.png")

// Where the browser tests find their tools; `make test` installs them
// (target console-test-deps).
const (
	chromiumPath     = "/usr/bin/chromium"
	playwrightModule = ".build/console-e2e/node_modules/playwright-core"
	// xssTitle is an event title that runs script if rendered as markup.
	xssTitle = `<img src=x onerror=alert(1)>`
)

// repoRoot is the repository's root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// browserTools returns node and the playwright-core module, failing (never
// skipping) with what to run when one is missing.
func browserTools(t *testing.T) (node, playwright string) {
	t.Helper()
	const hint = "run the tests through `make test` (or `make console-test-deps` once), which installs chromium, node and playwright-core"
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is missing: %s", hint)
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing: %s", chromiumPath, hint)
	}
	playwright = filepath.Join(repoRoot(t), playwrightModule)
	if _, err := os.Stat(filepath.Join(playwright, "package.json")); err != nil {
		t.Fatalf("playwright-core is missing from %s: %s", playwright, hint)
	}
	return node, playwright
}

// postpressEventBody is a postpress webhook for event id of the calendar
// owner@example.com, starting tomorrow.
func postpressEventBody(kind, id, title string, updated time.Time) []byte {
	start := time.Now().Add(24 * time.Hour).Truncate(time.Hour).UTC()
	b, _ := json.Marshal(map[string]any{
		"event": kind, "webhook_name": "CALENDAR_EVENTS_WEBHOOK", "account_id": "acct-console",
		"id": id, "master_event_id": "", "calendar_id": "owner@example.com",
		"created_at": "2026-01-01T00:00:00Z", "updated_at": updated.Format(time.RFC3339Nano),
		"title": title, "is_cancelled": false, "is_all_day": false, "is_attendees_list_hidden": false, "attendees": []any{},
		"start":     map[string]any{"date_time": start.Format(time.RFC3339), "time_zone": "Europe/Paris"},
		"end":       map[string]any{"date_time": start.Add(time.Hour).Format(time.RFC3339), "time_zone": "Europe/Paris"},
		"organizer": map[string]any{"email": "organizer@example.com", "display_name": ""},
	})
	return b
}

// sendPostpress posts a postpress webhook and waits until it is processed.
func sendPostpress(t *testing.T, ts *testServer, body []byte) string {
	t.Helper()
	code, resp := postWebhook(t, ts, "postpress", body, ppAuth())
	if code != http.StatusOK {
		t.Fatalf("postpress webhook = %d: %s", code, resp)
	}
	id := decodeAnswer(t, resp).DeliveryID
	waitForState(t, ts, id, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
	return id
}

// controlRequest is a step the browser script asks the test to take on the
// server side (send webhooks, restart calsync); the test runs it on its own
// goroutine, so a failure can end the test.
type controlRequest struct {
	action string
	reply  chan any
}

// blankPage serves an empty page on a loopback port: another origin for
// the CORS scenario.
func blankPage(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<!doctype html><title>another origin</title><p>dashboard</p>")
	})}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	return "http://" + lis.Addr().String()
}

// freeAddr returns a loopback address with a port free right now, so a
// server can be restarted on the same address.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// consoleResults is what the browser script reports.
type consoleResults struct {
	Token struct {
		PanelShown    bool `json:"panelShown"`
		RowsWithout   int  `json:"rowsWithout"`
		Unauthorized  bool `json:"unauthorized"`
		RowsWithToken int  `json:"rowsWithToken"`
		URLsWithToken int  `json:"urlsWithToken"`
		TokenStored   bool `json:"tokenStored"`
		CookieCount   int  `json:"cookieCount"`
	} `json:"token"`
	XSS struct {
		Dialogs      int    `json:"dialogs"`
		Visible      bool   `json:"visible"`
		EventTitle   string `json:"eventTitle"`
		HistoryTitle string `json:"historyTitle"`
		Images       int    `json:"images"`
		CSP          string `json:"csp"`
	} `json:"xss"`
	Resync struct {
		Before string `json:"before"`
		After  string `json:"after"`
		Notice string `json:"notice"`
	} `json:"resync"`
	Retry struct {
		Before string `json:"before"`
		After  string `json:"after"`
		Notice string `json:"notice"`
	} `json:"retry"`
	Live struct {
		CreatedShown   bool     `json:"createdShown"`
		UpdatedFields  []string `json:"updatedFields"`
		UpdatedOld     string   `json:"updatedOld"`
		UpdatedNew     string   `json:"updatedNew"`
		PausedShown    bool     `json:"pausedShown"`
		ResumedShown   bool     `json:"resumedShown"`
		ReloadShown    bool     `json:"reloadShown"`
		RowsAfter      int      `json:"rowsAfter"`
		DistinctCursor int      `json:"distinctCursors"`
		KeptOldRows    bool     `json:"keptOldRows"`
	} `json:"live"`
	History struct {
		Types   []string `json:"types"`
		Changed []string `json:"changed"`
	} `json:"history"`
	Overview struct {
		PostpressAccepted string `json:"postpressAccepted"`
		Dead              string `json:"dead"`
	} `json:"overview"`
	CORS struct {
		Events []struct {
			Type string `json:"type"`
			ID   string `json:"id"`
			Data string `json:"data"`
			At   int64  `json:"at"`
		} `json:"events"`
		Opens        []int64 `json:"opens"`
		DeniedEvents int     `json:"deniedEvents"`
		DeniedState  int     `json:"deniedState"`
		// RestartCommittedAt is when the changes made right after the
		// restart were committed (ms since the epoch).
		RestartCommittedAt int64 `json:"restartCommittedAt"`
		// What the console's Live page on the same server showed: the
		// created events in order, and its rows and distinct cursors.
		ConsoleCreated         []string `json:"consoleCreated"`
		ConsoleRows            int      `json:"consoleRows"`
		ConsoleDistinctCursors int      `json:"consoleDistinctCursors"`
	} `json:"cors"`
	MutualTLS struct {
		RowsWithCert       int  `json:"rowsWithCert"`
		TokenPanelWithCert bool `json:"tokenPanelWithCert"`
		RowsWithout        int  `json:"rowsWithout"`
	} `json:"mtls"`
	Screenshots []string `json:"screenshots"`
}

// TestConsoleInBrowser drives the console in headless chromium against a
// real calsync with API tokens, and a page on another origin against a
// second calsync that allows that origin.
func TestConsoleInBrowser(t *testing.T) {
	node, playwright := browserTools(t)
	root := repoRoot(t)
	shots := filepath.Join(root, ".build", "console-screenshots")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	// The console's server: tokens required, both providers, fake Recall.
	fake := recalltest.New(t)
	ts := mustServe(t, fullConfig(t, fake))
	api := ts.withToken(t, goodToken)

	// A Recall calendar synced once (a watermark, no full sync yet).
	rcal := fake.PutCalendar(recalltest.Calendar{PlatformEmail: "rooms@example.com"})
	start := time.Now().Add(48 * time.Hour).Truncate(time.Hour).UTC()
	fake.PutEvent(recalltest.Google("g-console").Summary("Planning").Timed(start, start.Add(time.Hour), "Europe/Paris").
		Meet("https://meet.google.com/abc-defg-hij").Event(rcal.ID))
	recallCal := model.CalendarID(model.ProviderRecall, "", rcal.ID)
	hint := syncEventsBody(rcal.ID)
	code, body := postWebhook(t, ts, "recall", hint, recallSigned(t, "svix", recallSecret, time.Now(), hint))
	if code != http.StatusOK {
		t.Fatalf("recall webhook = %d: %s", code, body)
	}
	waitForState(t, api, decodeAnswer(t, body).DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)

	// A dead letter that a retry can fix: a hint for a calendar Recall
	// does not know yet, which it learns afterwards.
	lateID := recalltest.NewID()
	hint = syncEventsBody(lateID)
	code, body = postWebhook(t, ts, "recall", hint, recallSigned(t, "svix", recallSecret, time.Now(), hint))
	if code != http.StatusOK {
		t.Fatalf("recall webhook = %d: %s", code, body)
	}
	deadID := decodeAnswer(t, body).DeliveryID
	waitForState(t, api, deadID, calsyncv1.DeliveryState_DELIVERY_STATE_DEAD)
	fake.PutCalendar(recalltest.Calendar{ID: lateID, PlatformEmail: "late@example.com"})

	// An event whose title is markup, from postpress.
	sendPostpress(t, api, postpressEventBody("calendar_event_created", "xss-event", xssTitle, time.Now().Add(-time.Minute)))
	ppCal := model.CalendarID(model.ProviderPostpress, "acct-console", "owner@example.com")
	xssEvent := model.EventID(model.ProviderPostpress, model.PostpressScope("acct-console", "owner@example.com"), "xss-event")

	// The CORS server: no tokens (EventSource cannot send one), loopback,
	// allowing one page origin and not another.
	allowed, denied := blankPage(t), blankPage(t)
	corsCfg := defaultTestConfig(t)
	corsCfg.postpressAuthSecrets = postpressSecret
	corsCfg.corsOrigins = allowed
	cors := mustServe(t, corsCfg)
	// Its restart (cors-restart) takes the ports it was given, which stay
	// free meanwhile far more surely than ports picked in advance.
	corsCfg.httpAddr, corsCfg.grpcAddr = cors.httpAddr, cors.grpcAddr

	// The mutual TLS server: no tokens, a client certificate instead, and
	// one calendar to show.
	pki := mustPKI(t)
	mtlsCfg := defaultTestConfig(t)
	mtlsCfg.tlsCert, mtlsCfg.tlsKey, mtlsCfg.tlsClientCA = pki.serverCert, pki.serverKey, pki.caFile
	mtlsCfg.postpressAuthSecrets = postpressSecret
	mtls := mustServe(t, mtlsCfg)
	mtlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.tlsClient(t, pki.clientCert, pki.clientKey)}}
	mtlsURL := "https://" + mtls.httpAddr
	req, _ := http.NewRequest(http.MethodPost, mtlsURL+"/v1/webhooks/postpress", bytes.NewReader(postpressEventBody("calendar_event_created", "tls-event", "Over TLS", time.Now())))
	req.Header.Set("Postpress-Auth", postpressSecret)
	if resp, err := mtlsClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("webhook over TLS: %v %v", resp, err)
	}
	eventually(t, "the calendar over mutual TLS", func() bool {
		resp, err := mtlsClient.Get(mtlsURL + "/v1/calendars")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `"cal_`)
	})

	liveSeq, corsSeq := 0, 0
	var liveEvent string
	ctl := map[string]func() any{
		// live-create: a new event; live-update: a new title for it.
		"live-create": func() any {
			liveSeq++
			liveEvent = fmt.Sprintf("live-%d", liveSeq)
			sendPostpress(t, api, postpressEventBody("calendar_event_created", liveEvent, "Live change "+liveEvent, time.Now().Add(-time.Minute)))
			return map[string]string{"event": model.EventID(model.ProviderPostpress, model.PostpressScope("acct-console", "owner@example.com"), liveEvent), "title": "Live change " + liveEvent}
		},
		"live-update": func() any {
			sendPostpress(t, api, postpressEventBody("calendar_event_updated", liveEvent, "Moved: "+liveEvent, time.Now()))
			return map[string]string{"title": "Moved: " + liveEvent}
		},
		// cors-post: three new events on the CORS server.
		"cors-post": func() any { return corsPost(t, cors, &corsSeq, 3) },
		// cors-restart: restart the CORS server on the same address and
		// database, then commit three events before any browser can have
		// reconnected.
		"cors-restart": func() any {
			cors.stop()
			cors = mustServe(t, corsCfg)
			ids := corsPost(t, cors, &corsSeq, 3)
			return map[string]any{"ids": ids, "committedAt": time.Now().UnixMilli()}
		},
	}

	cfg, _ := json.Marshal(map[string]any{
		"playwright": playwright, "chromium": chromiumPath, "shots": shots,
		"console": ts.url("/ui/"), "token": goodToken,
		"recallCalendar": recallCal, "postpressCalendar": ppCal, "xssEvent": xssEvent, "xssTitle": xssTitle,
		"deadDelivery": deadID,
		"corsServer":   cors.url(""), "allowedOrigin": allowed, "deniedOrigin": denied,
		"mtlsConsole": mtlsURL + "/ui/", "mtlsOrigin": mtlsURL, "clientCert": pki.clientCert, "clientKey": pki.clientKey,
	})
	results := runBrowserScript(t, node, filepath.Join("testdata", "console_e2e.mjs"), cfg, ctl)
	cors.stop()

	t.Run("TokenRequired", func(t *testing.T) {
		tk := results.Token
		if !tk.PanelShown || tk.RowsWithout != 0 || !tk.Unauthorized {
			t.Errorf("without a token: panel shown %v, rows %d, 401 seen %v", tk.PanelShown, tk.RowsWithout, tk.Unauthorized)
		}
		if tk.RowsWithToken < 2 || !tk.TokenStored || tk.URLsWithToken != 0 || tk.CookieCount != 0 {
			t.Errorf("with a token: rows %d, in sessionStorage %v, URLs carrying it %d, cookies %d", tk.RowsWithToken, tk.TokenStored, tk.URLsWithToken, tk.CookieCount)
		}
	})
	t.Run("MarkupIsText", func(t *testing.T) {
		x := results.XSS
		if x.Dialogs != 0 || x.Images != 0 {
			t.Errorf("the title ran: %d dialogs, %d img elements", x.Dialogs, x.Images)
		}
		if x.EventTitle != xssTitle || x.HistoryTitle != xssTitle || !x.Visible {
			t.Errorf("titles shown %q (events, visible %v), %q (history); want the text %q", x.EventTitle, x.Visible, x.HistoryTitle, xssTitle)
		}
		if !strings.Contains(x.CSP, "script-src 'self'") || strings.Contains(x.CSP, "unsafe") {
			t.Errorf("Content-Security-Policy = %q", x.CSP)
		}
	})
	t.Run("ResyncShowsNewSyncState", func(t *testing.T) {
		r := results.Resync
		if r.Before != "never" || r.After == "never" || r.After == "" || !strings.Contains(r.Notice, "DONE") {
			t.Errorf("last full sync %q → %q, notice %q", r.Before, r.After, r.Notice)
		}
	})
	t.Run("RetryDeadLetterReachesDone", func(t *testing.T) {
		r := results.Retry
		if r.Before != "DELIVERY_STATE_DEAD" || r.After != "DELIVERY_STATE_DONE" {
			t.Errorf("delivery %s: %s → %s (%s)", deadID, r.Before, r.After, r.Notice)
		}
		waitForState(t, api, deadID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
	})
	t.Run("LiveChanges", func(t *testing.T) {
		l := results.Live
		if !l.CreatedShown || strings.Join(l.UpdatedFields, ",") != "title" || !strings.HasPrefix(l.UpdatedOld, "Live change") || !strings.HasPrefix(l.UpdatedNew, "Moved:") {
			t.Errorf("live: created %v, update fields %v %q → %q", l.CreatedShown, l.UpdatedFields, l.UpdatedOld, l.UpdatedNew)
		}
		if l.PausedShown || !l.ResumedShown {
			t.Errorf("a change committed while paused: shown while paused %v, after resume %v", l.PausedShown, l.ResumedShown)
		}
		if !l.ReloadShown || !l.KeptOldRows || l.DistinctCursor != l.RowsAfter {
			t.Errorf("after a reload: change missed meanwhile shown %v, earlier rows kept %v, rows %d with %d distinct cursors", l.ReloadShown, l.KeptOldRows, l.RowsAfter, l.DistinctCursor)
		}
	})
	t.Run("EventHistory", func(t *testing.T) {
		h := results.History
		if strings.Join(h.Types, ",") != "CHANGE_TYPE_CREATED,CHANGE_TYPE_UPDATED" || len(h.Changed) != 2 || h.Changed[1] != "title" {
			t.Errorf("history types %v, changed %v", h.Types, h.Changed)
		}
	})
	t.Run("OverviewMatchesMetrics", func(t *testing.T) {
		m := scrape(t, ts.url("/metrics"), goodToken)
		want := fmt.Sprint(m[`calsync_webhooks_received_total{outcome="accepted",provider="postpress"}`])
		if results.Overview.PostpressAccepted != want || results.Overview.Dead != "0" {
			t.Errorf("overview: postpress accepted %s (metrics: %s), dead letters %s", results.Overview.PostpressAccepted, want, results.Overview.Dead)
		}
	})
	t.Run("MutualTLSWithBrowserCertificate", func(t *testing.T) {
		m := results.MutualTLS
		if m.RowsWithCert != 1 || m.TokenPanelWithCert || m.RowsWithout != 0 {
			t.Errorf("with the client certificate: %d calendars, token asked %v; without: %d calendars", m.RowsWithCert, m.TokenPanelWithCert, m.RowsWithout)
		}
	})
	t.Run("CrossOriginEventSource", func(t *testing.T) { checkCORSEvents(t, results) })
	t.Run("Screenshots", func(t *testing.T) {
		if len(results.Screenshots) < 5 {
			t.Fatalf("screenshots: %v", results.Screenshots)
		}
		for _, name := range results.Screenshots {
			fi, err := os.Stat(filepath.Join(shots, name))
			if err != nil || fi.Size() < 1000 {
				t.Errorf("screenshot %s: %v", name, err)
				continue
			}
			if *updateConsoleDocs {
				if err := os.MkdirAll(filepath.Join(root, "docs"), 0o755); err != nil {
					t.Fatal(err)
				}
				b, _ := os.ReadFile(filepath.Join(shots, name))
				if err := os.WriteFile(filepath.Join(root, "docs", name), b, 0o644); err != nil {
					t.Error(err)
				}
			}
		}
	})
}

// corsPost commits n new postpress events on ts, numbering them on from
// *seq, and returns their ids.
func corsPost(t *testing.T, ts *testServer, seq *int, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		*seq++
		id := fmt.Sprintf("cors-%d", *seq)
		sendPostpress(t, ts, postpressEventBody("calendar_event_created", id, "CORS "+id, time.Now()))
		ids = append(ids, model.EventID(model.ProviderPostpress, model.PostpressScope("acct-console", "owner@example.com"), id))
	}
	return ids
}

// checkCORSEvents: the allowed page saw every change exactly once, in
// order, across the restart, and resumed with Last-Event-ID; the denied
// page saw nothing.
func checkCORSEvents(t *testing.T, r *consoleResults) {
	c := r.CORS
	var changes []string
	seen := map[string]bool{}
	for _, e := range c.Events {
		if e.Type != "change" {
			continue
		}
		var ch struct {
			Event struct {
				ID string `json:"id"`
			} `json:"event"`
		}
		if err := json.Unmarshal([]byte(e.Data), &ch); err != nil {
			t.Fatalf("change data %q: %v", e.Data, err)
		}
		if seen[e.ID] {
			t.Errorf("cursor %s received twice", e.ID)
		}
		seen[e.ID] = true
		changes = append(changes, ch.Event.ID)
	}
	var want []string
	for i := 1; i <= 9; i++ {
		want = append(want, model.EventID(model.ProviderPostpress, model.PostpressScope("acct-console", "owner@example.com"), fmt.Sprintf("cors-%d", i)))
	}
	if strings.Join(changes, ",") != strings.Join(want, ",") {
		t.Errorf("changes received:\n%v\nwant:\n%v", changes, want)
	}
	// The browser reconnected after the changes following the restart were
	// committed: receiving them proves it resumed from Last-Event-ID, as a
	// stream from "now" would have started after them.
	if len(c.Opens) < 2 || c.Opens[1] <= c.RestartCommittedAt {
		t.Errorf("EventSource opened at %v, changes after the restart committed at %d: want a reconnect after that", c.Opens, c.RestartCommittedAt)
	}
	if strings.Join(c.ConsoleCreated, ",") != strings.Join(want, ",") || c.ConsoleRows != c.ConsoleDistinctCursors {
		t.Errorf("the console's Live page across the restart: created %v, %d rows with %d distinct cursors", c.ConsoleCreated, c.ConsoleRows, c.ConsoleDistinctCursors)
	}
	if c.DeniedEvents != 0 || c.DeniedState != 2 {
		t.Errorf("page on a denied origin: %d events, readyState %d (want 0 and CLOSED)", c.DeniedEvents, c.DeniedState)
	}
}

// runBrowserScript runs the node script with cfg, serves its control
// requests on this goroutine, and decodes the results it prints.
func runBrowserScript(t *testing.T, node, script string, cfg []byte, ctl map[string]func() any) *consoleResults {
	t.Helper()
	requests := make(chan controlRequest)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := controlRequest{action: strings.TrimPrefix(r.URL.Path, "/"), reply: make(chan any, 1)}
		select {
		case requests <- req:
		case <-r.Context().Done():
			return
		}
		select {
		case v := <-req.reply:
			json.NewEncoder(w).Encode(v)
		case <-r.Context().Done():
		}
	})}
	go srv.Serve(lis)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Env = append(os.Environ(), "CONSOLE_E2E="+string(cfg), "CONSOLE_E2E_CONTROL=http://"+lis.Addr().String())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case req := <-requests:
			f, ok := ctl[req.action]
			if !ok {
				t.Fatalf("browser script asked for unknown action %q", req.action)
			}
			req.reply <- f()
		case err := <-done:
			if err != nil {
				t.Fatalf("browser script: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), stdout.String())
			}
			var res consoleResults
			sc := bufio.NewScanner(&stdout)
			sc.Buffer(nil, 16<<20)
			var last string
			for sc.Scan() {
				last = sc.Text()
			}
			if err := json.Unmarshal([]byte(last), &res); err != nil {
				t.Fatalf("browser script output: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
			}
			t.Logf("browser script log:\n%s", stderr.String())
			return &res
		}
	}
}

// TestCORSOriginsFlag: a malformed --cors-allowed-origins is a usage error
// naming the flag; CALSYNC_CORS_ALLOWED_ORIGINS sets it too.
func TestCORSOriginsFlag(t *testing.T) {
	for _, bad := range []string{"*", "dash.example.com", "https://dash.example.com/app"} {
		cfg := defaultTestConfig(t)
		var stderr strings.Builder
		code := run(context.Background(), append(serveArgs(cfg), "--cors-allowed-origins", "https://ok.example,"+bad), io.Discard, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), "--cors-allowed-origins") {
			t.Errorf("%q: exit %d, stderr:\n%s", bad, code, stderr.String())
		}
	}
	t.Setenv("CALSYNC_CORS_ALLOWED_ORIGINS", "http://dash.example:8081")
	cfg := defaultTestConfig(t)
	cfg.httpAddr = freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, serveArgs(cfg), io.Discard, io.Discard) }()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited with %d", code)
		}
	}()
	eventually(t, "calsync to answer", func() bool {
		req, _ := http.NewRequest(http.MethodOptions, "http://"+cfg.httpAddr+"/v1/calendars", nil)
		req.Header.Set("Origin", "http://dash.example:8081")
		req.Header.Set("Access-Control-Request-Method", "GET")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusNoContent && resp.Header.Get("Access-Control-Allow-Origin") == "http://dash.example:8081"
	})
}
