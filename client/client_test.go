package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calsync/calsync/client"
	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/postpress"
	"github.com/calsync/calsync/server"
	"github.com/calsync/calsync/watch"
	"github.com/calsync/calsync/watch/watchtest"
)

// pki is a test CA with a server and a client certificate, as PEM files.
type pki struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey, ca := newCert(t, nil, nil, "test CA")
	var p pki
	p.caFile = writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	p.serverCert, p.serverKey = issueCert(t, dir, "server", ca, caKey)
	p.clientCert, p.clientKey = issueCert(t, dir, "client", ca, caKey)
	return p
}

// newCert makes a certificate for 127.0.0.1, signed by parent, or
// self-signed (a CA) when parent is nil.
func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: parent == nil, BasicConstraintsValid: true,
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

func issueCert(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (certFile, keyFile string) {
	t.Helper()
	key, cert := newCert(t, ca, caKey, name)
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", cert.Raw),
		writePEM(t, filepath.Join(dir, name+"-key.pem"), "EC PRIVATE KEY", der)
}

func writePEM(t *testing.T, path, typ string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestNewTLSAndToken: against a calsync requiring mutual TLS and a token,
// the client's CA file, client certificate and token options get through,
// and each one missing is refused.
func TestNewTLSAndToken(t *testing.T) {
	p := newPKI(t)
	ts := startServer(t, func(c *server.Config) {
		c.TLS = server.TLSFiles{CertFile: p.serverCert, KeyFile: p.serverKey, ClientCAFile: p.caFile}
		c.Tokens = server.NewTokens([]string{"good-token"})
	})
	list := func(opts ...client.Option) error {
		c, err := client.New(context.Background(), ts.grpcAddr, opts...)
		if err != nil {
			return err
		}
		defer c.Close()
		for _, err := range c.ListCalendars(context.Background(), nil) {
			return err
		}
		return nil
	}
	full := []client.Option{client.WithCAFile(p.caFile), client.WithClientCertificate(p.clientCert, p.clientKey), client.WithToken("good-token")}
	if err := list(full...); err != nil {
		t.Fatalf("with CA, client certificate and token: %v", err)
	}
	for name, opts := range map[string][]client.Option{
		"no client certificate": {client.WithCAFile(p.caFile), client.WithToken("good-token")},
		"wrong token":           {client.WithCAFile(p.caFile), client.WithClientCertificate(p.clientCert, p.clientKey), client.WithToken("bad")},
		"system roots":          {client.WithTLS(), client.WithClientCertificate(p.clientCert, p.clientKey), client.WithToken("good-token")},
		"no TLS":                {client.WithToken("good-token")},
	} {
		if err := list(opts...); err == nil {
			t.Errorf("%s: the call succeeded", name)
		}
	}
	if err := list(client.WithCAFile(p.caFile), client.WithClientCertificate(p.clientCert, p.clientKey), client.WithToken("bad")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("wrong token: %v, want UNAUTHENTICATED", err)
	}
	if _, err := client.New(context.Background(), "calsync.example:9090", client.WithToken("good-token")); err == nil {
		t.Error("New accepted sending a token in plain text to another host")
	}
	if _, err := client.New(context.Background(), "calsync.example:9090", client.WithCAFile(p.serverKey)); err == nil {
		t.Error("New accepted a CA file holding no certificate")
	}
}

// TestListFollowsPages: list iterators fetch every page in order and stop
// fetching when the loop stops.
func TestListFollowsPages(t *testing.T) {
	ts := startServer(t)
	st := ts.Store()
	for n := range 3 {
		cal := watchtest.CalendarID(model.ProviderPostpress, n)
		var changes []*calsyncv1.Change
		for i := range 4 {
			changes = append(changes, watchtest.Created(watchtest.Event(model.ProviderPostpress, cal, 10*i+n, fmt.Sprint(10*i+n))))
		}
		watchtest.Commit(t, st, changes...)
	}
	c := newClient(t, ts.grpcAddr)
	var titles []string
	for ev, err := range c.ListEvents(context.Background(), &calsyncv1.ListEventsRequest{PageSize: 5}) {
		if err != nil {
			t.Fatal(err)
		}
		titles = append(titles, ev.GetTitle())
	}
	if want := "[0 1 2 10 11 12 20 21 22 30 31 32]"; fmt.Sprint(titles) != want {
		t.Errorf("ListEvents yielded %v, want %s", titles, want)
	}
	// Breaking out of the loop stops the iterator; one that went on
	// yielding would make range panic.
	n := 0
	for range c.ListEvents(context.Background(), &calsyncv1.ListEventsRequest{PageSize: 2}) {
		if n++; n == 3 {
			break
		}
	}
	var errs []error
	for _, err := range c.ListEvents(context.Background(), &calsyncv1.ListEventsRequest{PageToken: "not a token of this request"}) {
		errs = append(errs, err)
	}
	if len(errs) != 12 || errors.Join(errs...) != nil {
		t.Errorf("ListEvents with a stray page token yielded %v, want the 12 events: the iterator starts from the first page", errs)
	}
	errs = nil
	for _, err := range c.ListEvents(context.Background(), &calsyncv1.ListEventsRequest{CalendarId: "not a calendar id"}) {
		errs = append(errs, err)
	}
	if len(errs) != 1 || status.Code(errs[0]) != codes.InvalidArgument {
		t.Errorf("ListEvents of a malformed calendar id yielded %v, want one INVALID_ARGUMENT", errs)
	}
	if _, err := c.GetEvent(context.Background(), "-", "evt_missing"); status.Code(err) == codes.OK {
		t.Error("GetEvent of a missing event succeeded")
	}
}

// TestUnaryCalls sends a postpress webhook over gRPC, with its
// authentication header as metadata, then reads what it made through the
// other calls.
func TestUnaryCalls(t *testing.T) {
	ts := startServer(t)
	c := newClient(t, ts.grpcAddr)
	e := meeting("standup", "Standup", 9, 1)
	h := http.Header{}
	h.Set(postpressHeader, postpressSecret)
	resp, err := c.IngestWebhook(context.Background(), "postpress", e.body(), h)
	if err != nil || resp.GetDeliveryId() == "" || resp.GetDuplicate() {
		t.Fatalf("IngestWebhook = %v, %v", resp, err)
	}
	if _, err := c.IngestWebhook(context.Background(), "postpress", e.body(), nil); status.Code(err) != codes.Unauthenticated {
		t.Errorf("without the header: %v, want UNAUTHENTICATED", err)
	}

	// The delivery, then the calendar and event it made.
	ctx := context.Background()
	waitFor(t, "the delivery processed", func() bool {
		for d, err := range c.ListDeliveries(ctx, &calsyncv1.ListDeliveriesRequest{State: calsyncv1.DeliveryState_DELIVERY_STATE_DONE}) {
			return err == nil && d.GetId() == resp.GetDeliveryId()
		}
		return false
	})
	if _, err := c.RetryDelivery(ctx, resp.GetDeliveryId()); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("RetryDelivery of a done delivery: %v, want FAILED_PRECONDITION", err)
	}
	var cal *calsyncv1.Calendar
	for got, err := range c.ListCalendars(ctx, &calsyncv1.ListCalendarsRequest{Provider: "postpress"}) {
		if err != nil {
			t.Fatal(err)
		}
		cal = got
	}
	if got, err := c.GetCalendar(ctx, cal.GetId()); err != nil || got.GetProviderCalendarId() != "owner@example.com" {
		t.Fatalf("GetCalendar = %v, %v", got, err)
	}
	w := postpress.Webhook{AccountID: "acct-1", ProviderCalendarID: "owner@example.com", ID: "standup"}
	if got, err := c.GetEvent(ctx, cal.GetId(), w.EventID()); err != nil || got.GetTitle() != "Standup" {
		t.Fatalf("GetEvent = %v, %v", got, err)
	}
	if _, err := c.ResyncCalendar(ctx, "cal_unknown"); status.Code(err) == codes.OK {
		t.Error("ResyncCalendar of an unknown calendar succeeded")
	}
}

// TestWatchErrorActions: Watch acts on the reasons the server puts on its
// errors, whatever their code.
func TestWatchErrorActions(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&watch.Error{Code: codes.InvalidArgument, Reason: watch.ReasonCursorForeign}, "reject"},
		{&watch.Error{Code: codes.InvalidArgument, Reason: watch.ReasonCursorMalformed}, "reject"},
		{&watch.Error{Code: codes.InvalidArgument, Reason: watch.ReasonInvalidRequest}, "stop"},
		{&watch.Error{Code: codes.OutOfRange, Reason: watch.ReasonCursorCompacted}, "resync"},
		{&watch.Error{Code: codes.ResourceExhausted, Reason: watch.ReasonSubscriberBehind}, "resync"},
		{&watch.Error{Code: codes.Unavailable, Reason: watch.ReasonCursorAhead}, "retry"},
		{status.Error(codes.ResourceExhausted, "too many watch streams"), "retry"},
		{status.Error(codes.Unavailable, "shutting down"), "retry"},
		{status.Error(codes.Unauthenticated, "no token"), "stop"},
	} {
		if got := client.WatchActionOf(c.err); got != c.want {
			t.Errorf("%v: Watch would %s, want %s", c.err, got, c.want)
		}
	}
}
