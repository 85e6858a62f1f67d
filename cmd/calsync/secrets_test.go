package main

import (
	"context"
	"encoding/base64"
	"html"
	"maps"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// TestSecretsNeverShown runs a server through everything an operator and a
// client can make it do — webhooks good and bad, every RPC and route with
// good and bad tokens, dead letters, retries, the CLI, /metrics, a token
// reload — at debug log level, then requires that no secret appears in
// the logs or in anything it answered.
func TestSecretsNeverShown(t *testing.T) {
	secretsNeverShown(t, nil)
}

// TestPostgresSecretsNeverShown does the same on PostgreSQL, with a
// password in the database URL.
func TestPostgresSecretsNeverShown(t *testing.T) {
	url := withPassword(pgtest.NewDatabase(t))
	secretsNeverShown(t, func(cfg *serveConfig) map[string]string {
		cfg.dbPath = url
		return map[string]string{"database password": pgPassword}
	})
}

// secretsNeverShown is TestSecretsNeverShown's exercise; configure, if
// set, changes the configuration and returns more secrets to look for.
func secretsNeverShown(t *testing.T, configure func(*serveConfig) map[string]string) {
	fake := recalltest.New(t)
	const (
		oauthSecret  = "oauth-client-secret-3f9a"
		oauthRefresh = "oauth-refresh-token-8b2c"
	)
	cfg := defaultTestConfig(t)
	cfg.apiTokens = goodToken + "," + otherToken
	cfg.postpressAuthSecrets = postpressSecret
	cfg.recallWebhookSecrets = recallSecret
	cfg.recallAPIURL, cfg.recallAPIKey = fake.URL, fake.APIKey()
	cfg.pprofAddr = "127.0.0.1:0"
	cfg.reload = make(chan struct{})
	reloaded := make(chan struct{}, 1)
	cfg.reloaded = func() { reloaded <- struct{}{} }
	var moreSecrets map[string]string
	if configure != nil {
		moreSecrets = configure(&cfg)
	}
	ts := mustServe(t, cfg)
	good := ts.withToken(t, goodToken)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var seen strings.Builder // everything the server answered
	record := func(parts ...string) {
		for _, p := range parts {
			seen.WriteString(p)
			seen.WriteByte('\n')
		}
	}
	recordProto := func(m proto.Message, err error) {
		if err != nil {
			record(err.Error(), status.Convert(err).String())
			return
		}
		b, _ := protojson.Marshal(m)
		record(string(b))
	}

	cal := fake.PutCalendar(recalltest.Calendar{PlatformEmail: "owner@example.com", OAuthClientSecret: oauthSecret, OAuthRefreshToken: oauthRefresh})
	start := time.Now().Add(24 * time.Hour).Truncate(time.Hour).UTC()
	fake.PutEvent(recalltest.Google("g1").Summary("Sync").Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID))
	calID := model.CalendarID(model.ProviderRecall, "", cal.ID)

	// Webhooks: good, bad signature, wrong postpress secret, unparseable.
	hint := syncEventsBody(cal.ID)
	code, body := postWebhook(t, ts, "recall", hint, recallSigned(t, "svix", recallSecret, time.Now(), hint))
	record(string(body))
	if code != http.StatusOK {
		t.Fatalf("webhook = %d: %s", code, body)
	}
	waitForState(t, good, decodeAnswer(t, body).DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
	_, body = postWebhook(t, ts, "recall", hint, recallSigned(t, "svix", "whsec_"+base64.StdEncoding.EncodeToString([]byte("another-secret-1234")), time.Now(), hint))
	record(string(body))
	_, body = postWebhook(t, ts, "postpress", readTestdata(t, "postpress_created.json"), http.Header{"Postpress-Auth": {postpressSecret + "x"}})
	record(string(body))
	_, body = postWebhook(t, ts, "postpress", []byte("not json"), ppAuth())
	record(string(body))
	waitForState(t, good, decodeAnswer(t, body).DeliveryID, calsyncv1.DeliveryState_DELIVERY_STATE_DEAD)

	// Recall failing (a 401 carries the request's key in nothing we show).
	fake.FailNext(1, http.StatusUnauthorized)
	_, body = postWebhook(t, ts, "recall", syncEventsBody(cal.ID), recallSigned(t, "webhook", recallSecret, time.Now(), syncEventsBody(cal.ID)))
	record(string(body))

	// Every RPC with every kind of token, and every route.
	for _, token := range []string{"", "tok-wrong", goodToken} {
		conn := dialToken(t, ts.grpcAddr, token)
		for _, rpc := range apiRPCs {
			err := rpc.call(ctx, conn)
			recordProto(nil, err)
		}
		for _, r := range apiRoutes {
			if r.path == "/v1/events:watch" {
				continue
			}
			h := http.Header{}
			if token != "" {
				h.Set("Authorization", "Bearer "+token)
			}
			_, b := httpDo(t, r.method, ts.url(r.path), []byte("{}"), h)
			record(string(b))
		}
	}
	client := calsyncv1.NewCalendarServiceClient(good.conn)
	recordProto(client.GetCalendar(ctx, &calsyncv1.GetCalendarRequest{CalendarId: calID}))
	recordProto(client.ListEvents(ctx, &calsyncv1.ListEventsRequest{CalendarId: "-", IncludeRaw: true}))
	recordProto(calsyncv1.NewDeliveryServiceClient(good.conn).ListDeliveries(ctx, &calsyncv1.ListDeliveriesRequest{}))
	recordProto(client.ResyncCalendar(ctx, &calsyncv1.ResyncCalendarRequest{CalendarId: calID}))
	watchAll(t, ctx, good.conn, record)

	// The CLI, and a reload.
	t.Setenv("CALSYNC_TOKEN", goodToken)
	for _, args := range [][]string{
		{"calendars", "list"}, {"calendars", "get", calID, "--json"}, {"events", "list", "--json"},
		{"deliveries", "list"}, {"deliveries", "list", "--json"}, {"calendars", "list", "--token", "tok-wrong"},
	} {
		_, out, errOut := cli(t, append(args, "--server", ts.grpcAddr)...)
		record(out, errOut)
	}
	cfg.reload <- struct{}{}
	<-reloaded
	_, b := httpDo(t, http.MethodGet, ts.url("/metrics"), nil, http.Header{"Authorization": {"Bearer " + goodToken}})
	record(string(b))

	// Every profile pprof serves, with and without a token.
	pprofBase := "http://" + addrFromLogs(t, ts.logs.String(), "pprof_addr") + "/debug/pprof/"
	for _, token := range []string{"", goodToken} {
		fetchPprof(t, pprofBase, token, record)
	}

	ts.stop()
	secrets := map[string]string{
		"API token":             goodToken,
		"second API token":      otherToken,
		"postpress secret":      postpressSecret,
		"Recall webhook secret": strings.TrimPrefix(recallSecret, "whsec_"),
		"Recall API key":        fake.APIKey(),
		"OAuth client secret":   oauthSecret,
		"OAuth refresh token":   oauthRefresh,
	}
	maps.Copy(secrets, moreSecrets)
	logs := ts.logs.String()
	if len(logs) < 1000 || !strings.Contains(logs, "webhook rejected") || !strings.Contains(logs, "dead-lettered") {
		t.Fatalf("the logs do not show the exercise ran:\n%s", logs)
	}
	for what, secret := range secrets {
		if strings.Contains(logs, secret) {
			t.Errorf("the %s appears in the logs", what)
		}
		if strings.Contains(seen.String(), secret) {
			t.Errorf("the %s appears in a response", what)
		}
	}
}

// watchAll reads a snapshot stream to its end marker and records it.
func watchAll(t *testing.T, ctx context.Context, conn *grpc.ClientConn, record func(...string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := calsyncv1.NewCalendarServiceClient(conn).WatchEvents(ctx, &calsyncv1.WatchEventsRequest{InitialSnapshot: true, IncludePrevious: true})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := protojson.Marshal(resp)
		record(string(b))
		if resp.GetBookmark().GetSnapshotComplete() {
			return
		}
	}
}

// fetchPprof GETs every endpoint the pprof listener at base serves — the
// index, each profile it links to in text form, goroutine dumps with full
// stacks, the command line, symbols, a CPU profile and a trace — and
// records every answer.
func fetchPprof(t *testing.T, base, token string, record func(...string)) {
	t.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	_, index := httpDo(t, http.MethodGet, base, nil, h)
	record(string(index))
	paths := []string{"cmdline", "symbol", "goroutine?debug=2", "profile?seconds=1", "trace?seconds=1"}
	for _, m := range regexp.MustCompile(`href='([^']+)'`).FindAllStringSubmatch(string(index), -1) {
		paths = append(paths, html.UnescapeString(m[1]))
	}
	if token != "" && len(paths) < 10 {
		t.Fatalf("the pprof index links to %d profiles:\n%s", len(paths)-5, index)
	}
	for _, path := range paths {
		_, b := httpDo(t, http.MethodGet, base+path, nil, h)
		record(string(b))
	}
	_, b := httpDo(t, http.MethodPost, base+"symbol", []byte("0x1+0x2"), h)
	record(string(b))
}
