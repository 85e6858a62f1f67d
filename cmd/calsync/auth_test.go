package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

const (
	goodToken  = "tok-good-7c1e2f9a"
	otherToken = "tok-other-51d0b3aa"
)

// dialToken connects to addr sending token (none when empty) with every
// call, over plain text.
func dialToken(t *testing.T, addr, token string) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken{token: token}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// rpcCase calls one API method; every one must be refused without a valid
// token.
type rpcCase struct {
	name string
	call func(ctx context.Context, conn *grpc.ClientConn) error
}

const someCal = "cal_aaaaaaaaaaaaaaaaaaaaaaaa"

var apiRPCs = []rpcCase{
	{"GetCalendar", func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := calsyncv1.NewCalendarServiceClient(c).GetCalendar(ctx, &calsyncv1.GetCalendarRequest{CalendarId: someCal})
		return err
	}},
	{"ListCalendars", func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := calsyncv1.NewCalendarServiceClient(c).ListCalendars(ctx, &calsyncv1.ListCalendarsRequest{})
		return err
	}},
	{"GetEvent", func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := calsyncv1.NewCalendarServiceClient(c).GetEvent(ctx, &calsyncv1.GetEventRequest{CalendarId: someCal, EventId: "evt_aaaaaaaaaaaaaaaaaaaaaaaa"})
		return err
	}},
	{"ListEvents", func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := calsyncv1.NewCalendarServiceClient(c).ListEvents(ctx, &calsyncv1.ListEventsRequest{CalendarId: "-"})
		return err
	}},
	{"WatchEvents", func(ctx context.Context, c *grpc.ClientConn) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		s, err := calsyncv1.NewCalendarServiceClient(c).WatchEvents(ctx, &calsyncv1.WatchEventsRequest{})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}},
	{"ResyncCalendar", func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := calsyncv1.NewCalendarServiceClient(c).ResyncCalendar(ctx, &calsyncv1.ResyncCalendarRequest{CalendarId: someCal})
		return err
	}},
	{"ListDeliveries", func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := calsyncv1.NewDeliveryServiceClient(c).ListDeliveries(ctx, &calsyncv1.ListDeliveriesRequest{})
		return err
	}},
	{"RetryDelivery", func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := calsyncv1.NewDeliveryServiceClient(c).RetryDelivery(ctx, &calsyncv1.RetryDeliveryRequest{DeliveryId: "1"})
		return err
	}},
}

// restRoute is one REST route of the API.
type restRoute struct{ method, path string }

var apiRoutes = []restRoute{
	{http.MethodGet, "/v1/calendars"},
	{http.MethodGet, "/v1/calendars/" + someCal},
	{http.MethodGet, "/v1/calendars/-/events"},
	{http.MethodGet, "/v1/calendars/" + someCal + "/events/evt_aaaaaaaaaaaaaaaaaaaaaaaa"},
	{http.MethodGet, "/v1/events:watch"},
	{http.MethodPost, "/v1/calendars/" + someCal + ":resync"},
	{http.MethodGet, "/v1/deliveries?state=DELIVERY_STATE_DEAD"},
	{http.MethodPost, "/v1/deliveries/1:retry"},
	{http.MethodGet, "/metrics"},
}

// restStatus sends one request and returns its status without reading a
// streaming body to the end.
func restStatus(t *testing.T, client *http.Client, method, url, authorization string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestAPIAuthentication(t *testing.T) {
	cfg := defaultTestConfig(t)
	cfg.apiTokens = goodToken + "," + otherToken
	cfg.postpressAuthSecrets = postpressSecret
	ts := mustServe(t, cfg)
	ctx := context.Background()

	conns := map[string]*grpc.ClientConn{
		"NoToken":    dialToken(t, ts.grpcAddr, ""),
		"WrongToken": dialToken(t, ts.grpcAddr, "tok-wrong"),
		"GoodToken":  dialToken(t, ts.grpcAddr, goodToken),
		"OtherToken": dialToken(t, ts.grpcAddr, otherToken),
	}
	for _, rpc := range apiRPCs {
		for name, conn := range conns {
			t.Run("GRPC/"+rpc.name+"/"+name, func(t *testing.T) {
				err := rpc.call(ctx, conn)
				refused := status.Code(err) == codes.Unauthenticated
				if wantRefused := name == "NoToken" || name == "WrongToken"; refused != wantRefused {
					t.Errorf("%s: %v (refused %v, want %v)", rpc.name, err, refused, wantRefused)
				}
			})
		}
	}

	headers := map[string]string{
		"NoToken":      "",
		"WrongToken":   "Bearer tok-wrong",
		"WrongScheme":  "Basic " + goodToken,
		"GoodToken":    "Bearer " + goodToken,
		"LowerScheme":  "bearer " + goodToken,
		"OtherToken":   "Bearer " + otherToken,
		"TokenNoSpace": "Bearer" + goodToken,
	}
	good := map[string]bool{"GoodToken": true, "LowerScheme": true, "OtherToken": true}
	for _, r := range apiRoutes {
		for name, h := range headers {
			t.Run("REST/"+r.method+r.path+"/"+name, func(t *testing.T) {
				code := restStatus(t, http.DefaultClient, r.method, ts.url(r.path), h)
				if good[name] == (code == http.StatusUnauthorized) {
					t.Errorf("%s %s with %q = %d", r.method, r.path, h, code)
				}
			})
		}
	}

	t.Run("PublicWithoutToken", func(t *testing.T) {
		noToken := conns["NoToken"]
		if _, err := grpc_health_v1.NewHealthClient(noToken).Check(ctx, &grpc_health_v1.HealthCheckRequest{}); err != nil {
			t.Errorf("health: %v", err)
		}
		rs, err := reflectionpb.NewServerReflectionClient(noToken).ServerReflectionInfo(ctx)
		if err == nil {
			err = rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		}
		if err == nil {
			_, err = rs.Recv()
		}
		if err != nil {
			t.Errorf("reflection: %v", err)
		}
		if _, err := calsyncv1.NewWebhookServiceClient(noToken).IngestWebhook(ctx, &calsyncv1.IngestWebhookRequest{Provider: "postpress"}); status.Code(err) != codes.Unauthenticated ||
			!strings.Contains(status.Convert(err).Message(), "webhook credentials") {
			t.Errorf("IngestWebhook without provider credentials = %v, want the provider's refusal", err)
		}
		for _, path := range []string{"/healthz", "/openapi.json"} {
			if code := restStatus(t, http.DefaultClient, http.MethodGet, ts.url(path), ""); code != http.StatusOK {
				t.Errorf("GET %s = %d", path, code)
			}
		}
		code, body := postWebhook(t, ts, "postpress", readTestdata(t, "postpress_created.json"), ppAuth())
		if code != http.StatusOK {
			t.Errorf("webhook with provider credentials and no API token = %d: %s", code, body)
		}
	})

	t.Run("RESTAnswerNamesBearer", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, ts.url("/metrics"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("WWW-Authenticate = %q", got)
		}
	})
}

func TestRefuseToStartWithoutAuth(t *testing.T) {
	for _, c := range []struct {
		name   string
		mutate func(*serveConfig)
		refuse bool
	}{
		{"LoopbackIsFine", func(*serveConfig) {}, false},
		{"ErrAllInterfaces", func(c *serveConfig) { c.grpcAddr = ":0" }, true},
		{"ErrPublicHTTP", func(c *serveConfig) { c.httpAddr = "0.0.0.0:0" }, true},
		{"ErrPublicPprof", func(c *serveConfig) { c.pprofAddr = "0.0.0.0:0" }, true},
		{"TokensAllowPublicPprof", func(c *serveConfig) { c.pprofAddr = "0.0.0.0:0"; c.apiTokens = goodToken }, false},
		{"LocalhostIsFine", func(c *serveConfig) { c.httpAddr = "localhost:0" }, false},
		{"TokensAllowIt", func(c *serveConfig) { c.grpcAddr = ":0"; c.apiTokens = goodToken }, false},
		{"InsecureNoAuthAllowsIt", func(c *serveConfig) { c.grpcAddr = ":0"; c.insecureNoAuth = true }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := defaultTestConfig(t)
			c.mutate(&cfg)
			if !c.refuse {
				mustServe(t, cfg)
				return
			}
			var stderr strings.Builder
			code := run(context.Background(), serveArgs(cfg), io.Discard, &stderr)
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			last := lines[len(lines)-1]
			if code != 2 || !strings.Contains(last, "--insecure-no-auth") || !strings.Contains(last, "not a loopback address") {
				t.Errorf("exit %d, stderr:\n%s", code, stderr.String())
			}
		})
	}
}

// serveArgs is the command line of `calsync serve` for cfg's addresses and
// database.
func serveArgs(cfg serveConfig) []string {
	args := []string{"serve", "--grpc-addr", cfg.grpcAddr, "--http-addr", cfg.httpAddr, "--db", cfg.dbPath, "--log-level", "error"}
	if cfg.pprofAddr != "" {
		args = append(args, "--pprof-addr", cfg.pprofAddr)
	}
	return args
}

func TestTokenFileReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens")
	writeFile(t, file, "# API tokens\ntok-first\n\n")
	cfg := defaultTestConfig(t)
	cfg.apiTokensFile = file
	cfg.postpressAuthSecrets = postpressSecret
	cfg.reload = make(chan struct{})
	reloaded := make(chan struct{}, 1)
	cfg.reloaded = func() { reloaded <- struct{}{} }
	ts := mustServe(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	first := dialToken(t, ts.grpcAddr, "tok-first")
	stream, err := calsyncv1.NewCalendarServiceClient(first).WatchEvents(ctx, &calsyncv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the opening bookmark
		t.Fatal(err)
	}

	writeFile(t, file, "tok-second\n")
	cfg.reload <- struct{}{}
	<-reloaded

	list := func(conn *grpc.ClientConn) error {
		_, err := calsyncv1.NewCalendarServiceClient(conn).ListCalendars(ctx, &calsyncv1.ListCalendarsRequest{})
		return err
	}
	if err := list(first); status.Code(err) != codes.Unauthenticated {
		t.Errorf("the removed token still works: %v", err)
	}
	if err := list(dialToken(t, ts.grpcAddr, "tok-second")); err != nil {
		t.Errorf("the added token does not work: %v", err)
	}
	// The stream opened with the removed token stays open and gets the
	// next change.
	if code, body := postWebhook(t, ts, "postpress", readTestdata(t, "postpress_created.json"), ppAuth()); code != http.StatusOK {
		t.Fatalf("webhook = %d: %s", code, body)
	}
	resp, err := stream.Recv()
	if err != nil || resp.GetChange() == nil {
		t.Fatalf("stream after reload: %v, %v", resp, err)
	}

	t.Run("UnreadableFileKeepsTokens", func(t *testing.T) {
		if err := os.Remove(file); err != nil {
			t.Fatal(err)
		}
		cfg.reload <- struct{}{}
		<-reloaded
		if err := list(dialToken(t, ts.grpcAddr, "tok-second")); err != nil {
			t.Errorf("a failed reload dropped the tokens: %v", err)
		}
	})
}

// TestTokenFileReloadOnSIGHUP checks the signal wiring with the real
// binary.
func TestTokenFileReloadOnSIGHUP(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, file, "tok-first\n")
	p := startBinary(t, nil, "--db", filepath.Join(t.TempDir(), "c.db"), "--api-tokens-file", file)
	ctx := context.Background()
	list := func(token string) error {
		_, err := calsyncv1.NewCalendarServiceClient(dialToken(t, p.grpcAddr, token)).ListCalendars(ctx, &calsyncv1.ListCalendarsRequest{})
		return err
	}
	if err := list("tok-first"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, file, "tok-second\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the token file to be reloaded", func() bool { return strings.Contains(p.logs.String(), "API tokens reloaded") })
	if err := list("tok-first"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("old token after SIGHUP: %v", err)
	}
	if err := list("tok-second"); err != nil {
		t.Errorf("new token after SIGHUP: %v", err)
	}
	p.stop(t)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate it signed, plus a client certificate it did not sign, all
// written as PEM files.
type testPKI struct {
	dir                                        string
	caFile, serverCert, serverKey              string
	clientCert, clientKey, rogueCert, rogueKey string
	pool                                       *x509.CertPool
}

func mustPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{dir: dir, pool: x509.NewCertPool()}
	caKey, ca := mustCert(t, nil, nil, "calsync test CA", true)
	p.pool.AddCert(ca)
	p.caFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", ca.Raw)
	p.serverCert, p.serverKey = issue(t, dir, "server", ca, caKey)
	p.clientCert, p.clientKey = issue(t, dir, "client", ca, caKey)
	rogueKey, rogueCA := mustCert(t, nil, nil, "rogue CA", true)
	p.rogueCert, p.rogueKey = issue(t, dir, "rogue", rogueCA, rogueKey)
	return p
}

func mustCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		IsCA: isCA, BasicConstraintsValid: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

func issue(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (certFile, keyFile string) {
	t.Helper()
	key, cert := mustCert(t, ca, caKey, name, false)
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name+".pem", "CERTIFICATE", cert.Raw), writePEM(t, dir, name+"-key.pem", "EC PRIVATE KEY", der)
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	writeFile(t, path, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
	return path
}

// tlsClient returns TLS settings trusting the test CA, with the given
// client certificate (none when certFile is empty).
func (p *testPKI) tlsClient(t *testing.T, certFile, keyFile string) *tls.Config {
	t.Helper()
	tc := &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc
}

func TestMutualTLS(t *testing.T) {
	pki := mustPKI(t)
	cfg := defaultTestConfig(t)
	cfg.tlsCert, cfg.tlsKey, cfg.tlsClientCA = pki.serverCert, pki.serverKey, pki.caFile
	cfg.postpressAuthSecrets = postpressSecret
	ts := mustServe(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	dial := func(tc *tls.Config) *grpc.ClientConn {
		conn, err := grpc.NewClient(ts.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	list := func(conn *grpc.ClientConn) error {
		_, err := calsyncv1.NewCalendarServiceClient(conn).ListCalendars(ctx, &calsyncv1.ListCalendarsRequest{})
		return err
	}
	https := func(tc *tls.Config) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	url := func(path string) string { return "https://" + ts.httpAddr + path }

	t.Run("GRPCWithClientCert", func(t *testing.T) {
		conn := dial(pki.tlsClient(t, pki.clientCert, pki.clientKey))
		if err := list(conn); err != nil {
			t.Fatal(err)
		}
		if err := apiRPCs[4].call(ctx, conn); err != nil { // WatchEvents
			t.Fatal(err)
		}
	})
	t.Run("ErrGRPCWithoutClientCert", func(t *testing.T) {
		conn := dial(pki.tlsClient(t, "", ""))
		if err := list(conn); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("ListCalendars without a client certificate = %v", err)
		}
		if _, err := grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{}); err != nil {
			t.Errorf("health without a client certificate: %v", err)
		}
	})
	t.Run("ErrGRPCWithUntrustedClientCert", func(t *testing.T) {
		if err := list(dial(pki.tlsClient(t, pki.rogueCert, pki.rogueKey))); err == nil {
			t.Fatal("a certificate from another CA was accepted")
		}
	})
	t.Run("ErrPlainTextToTLS", func(t *testing.T) {
		if err := list(dialToken(t, ts.grpcAddr, "")); err == nil {
			t.Fatal("plain text was accepted")
		}
	})
	t.Run("RESTWithClientCert", func(t *testing.T) {
		c := https(pki.tlsClient(t, pki.clientCert, pki.clientKey))
		for _, path := range []string{"/v1/calendars", "/metrics", "/healthz"} {
			if code := restStatus(t, c, http.MethodGet, url(path), ""); code != http.StatusOK {
				t.Errorf("GET %s = %d", path, code)
			}
		}
	})
	t.Run("ErrRESTWithoutClientCert", func(t *testing.T) {
		c := https(pki.tlsClient(t, "", ""))
		for _, r := range apiRoutes {
			if code := restStatus(t, c, r.method, url(r.path), ""); code != http.StatusUnauthorized {
				t.Errorf("%s %s = %d", r.method, r.path, code)
			}
		}
		for _, path := range []string{"/healthz", "/openapi.json"} {
			if code := restStatus(t, c, http.MethodGet, url(path), ""); code != http.StatusOK {
				t.Errorf("GET %s = %d", path, code)
			}
		}
		req, _ := http.NewRequest(http.MethodPost, url("/v1/webhooks/postpress"), strings.NewReader(string(readTestdata(t, "postpress_created.json"))))
		req.Header.Set("Postpress-Auth", postpressSecret)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("webhook without a client certificate = %d, want 200 (providers have none)", resp.StatusCode)
		}
	})
	t.Run("CLI", func(t *testing.T) {
		var out, errOut strings.Builder
		code := run(ctx, []string{"calendars", "list", "--server", ts.grpcAddr, "--tls-ca", pki.caFile,
			"--tls-cert", pki.clientCert, "--tls-key", pki.clientKey, "--tls-server-name", "127.0.0.1"}, &out, &errOut)
		if code != 0 || !strings.Contains(out.String(), "PROVIDER") {
			t.Errorf("calendars list with a client certificate: exit %d\n%s%s", code, out.String(), errOut.String())
		}
		out.Reset()
		errOut.Reset()
		code = run(ctx, []string{"calendars", "list", "--server", ts.grpcAddr, "--tls-ca", pki.caFile}, &out, &errOut)
		if code != 1 || !strings.Contains(errOut.String(), "UNAUTHENTICATED") || strings.Count(errOut.String(), "\n") != 1 {
			t.Errorf("calendars list without a client certificate: exit %d, stderr %q", code, errOut.String())
		}
	})
}
