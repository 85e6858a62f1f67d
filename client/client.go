package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"iter"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// Defaults of the connection [New] opens.
const (
	// KeepaliveTime is how long a quiet connection waits before the client
	// pings it. It stays above calsync's --grpc-keepalive-min-time (10s by
	// default): a client pinging more often is disconnected with
	// GOAWAY too_many_pings.
	KeepaliveTime = 30 * time.Second
	// KeepaliveTimeout is how long the client waits for a ping's answer
	// before it drops the connection and reconnects.
	KeepaliveTimeout = 10 * time.Second
	// StreamWindow and ConnWindow are the HTTP/2 flow-control windows: a
	// watch catching up from far behind waits on 64 KiB windows before it
	// runs out of CPU (see the README's "Catching up fast").
	StreamWindow = 4 << 20
	ConnWindow   = 16 << 20
)

// Client is a connection to calsync. Its methods are safe for concurrent
// use; one Client per process and server is enough, since gRPC multiplexes
// every call and watch over one connection and reconnects by itself.
type Client struct {
	conn       *grpc.ClientConn
	calendars  calsyncv1.CalendarServiceClient
	webhooks   calsyncv1.WebhookServiceClient
	deliveries calsyncv1.DeliveryServiceClient
}

// Option configures [New].
type Option func(*settings)

type settings struct {
	token         string
	tls           bool
	caFile        string
	certFile      string
	keyFile       string
	serverName    string
	tlsConfig     *tls.Config
	dialOptions   []grpc.DialOption
	allowInsecure bool
}

// WithToken sends token as the API bearer token on every call. Without TLS,
// New accepts it only for a server on this machine (loopback), so a token is
// never sent in plain text across a network.
func WithToken(token string) Option { return func(s *settings) { s.token = token } }

// WithTLS connects over TLS, verifying the server against the system's
// roots. The other TLS options imply it.
func WithTLS() Option { return func(s *settings) { s.tls = true } }

// WithCAFile connects over TLS, verifying the server against the PEM
// certificates in file instead of the system's roots.
func WithCAFile(file string) Option {
	return func(s *settings) { s.tls, s.caFile = true, file }
}

// WithClientCertificate presents the PEM certificate and key in certFile
// and keyFile, for servers that require mutual TLS (--tls-client-ca).
func WithClientCertificate(certFile, keyFile string) Option {
	return func(s *settings) { s.tls, s.certFile, s.keyFile = true, certFile, keyFile }
}

// WithServerName verifies the server's certificate against name instead of
// the host of the target.
func WithServerName(name string) Option {
	return func(s *settings) { s.tls, s.serverName = true, name }
}

// WithTLSConfig connects over TLS configured by c, for needs the other TLS
// options do not cover. The CA file, client certificate and server name
// options still apply on top of a copy of c.
func WithTLSConfig(c *tls.Config) Option {
	return func(s *settings) { s.tls, s.tlsConfig = true, c }
}

// WithDialOptions adds gRPC dial options after the client's own, so they
// win: interceptors, a custom dialer, other keepalive or backoff settings.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(s *settings) { s.dialOptions = append(s.dialOptions, opts...) }
}

// New returns a client of the calsync gRPC API at target (host:port, or any
// gRPC target such as dns:///calsync:9090). It does not wait for the server:
// the connection is made on first use, and made again after every failure,
// so a client can be created before calsync is up. ctx bounds only New
// itself (reading the TLS files).
//
// The connection is tuned for long watch streams: keepalive pings every
// [KeepaliveTime] on a quiet connection, HTTP/2 windows of [StreamWindow]
// and [ConnWindow] for catching up, and reconnection within 10s of a
// restarted server.
func New(ctx context.Context, target string, opts ...Option) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if target == "" {
		return nil, errors.New("client: empty target")
	}
	var s settings
	for _, o := range opts {
		o(&s)
	}
	dial := []grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout}),
		grpc.WithInitialWindowSize(StreamWindow),
		grpc.WithInitialConnWindowSize(ConnWindow),
		// gRPC's own reconnection backoff grows to two minutes by
		// default; a restarted calsync should be found again within
		// seconds.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 10 * time.Second},
			MinConnectTimeout: 10 * time.Second,
		}),
	}
	if s.tls {
		tc, err := s.loadTLS()
		if err != nil {
			return nil, err
		}
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	} else {
		if s.token != "" && !loopbackTarget(target) {
			return nil, fmt.Errorf("client: refusing to send the API token in plain text to %s: use WithTLS or WithCAFile", target)
		}
		dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if s.token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearerToken{token: s.token, secure: s.tls}))
	}
	conn, err := grpc.NewClient(target, append(dial, s.dialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", target, err)
	}
	return &Client{
		conn:       conn,
		calendars:  calsyncv1.NewCalendarServiceClient(conn),
		webhooks:   calsyncv1.NewWebhookServiceClient(conn),
		deliveries: calsyncv1.NewDeliveryServiceClient(conn),
	}, nil
}

func (s *settings) loadTLS() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.tlsConfig != nil {
		tc = s.tlsConfig.Clone()
	}
	if s.serverName != "" {
		tc.ServerName = s.serverName
	}
	if s.caFile != "" {
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			return nil, fmt.Errorf("client: CA file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client: CA file %s holds no PEM certificate", s.caFile)
		}
	}
	if s.certFile != "" || s.keyFile != "" {
		cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
		if err != nil {
			return nil, fmt.Errorf("client: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// bearerToken sends the API token with every call.
type bearerToken struct {
	token  string
	secure bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false only for plain-text connections New
// allowed, which are loopback ones.
func (b bearerToken) RequireTransportSecurity() bool { return b.secure }

// loopbackTarget reports whether a gRPC target names this machine only: a
// loopback address, localhost, or a Unix socket.
func loopbackTarget(target string) bool {
	if strings.HasPrefix(target, "unix:") {
		return true
	}
	for _, scheme := range []string{"dns:///", "passthrough:///"} {
		target = strings.TrimPrefix(target, scheme)
	}
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Close closes the connection; calls and watches under way fail.
func (c *Client) Close() error { return c.conn.Close() }

// Conn returns the underlying gRPC connection, for calls this package does
// not wrap.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// GetCalendar returns one calendar; NOT_FOUND if calsync does not hold it.
func (c *Client) GetCalendar(ctx context.Context, calendarID string) (*calsyncv1.Calendar, error) {
	resp, err := c.calendars.GetCalendar(ctx, &calsyncv1.GetCalendarRequest{CalendarId: calendarID})
	return resp.GetCalendar(), err
}

// GetEvent returns one event, tombstones included; NOT_FOUND if calsync
// does not hold it in that calendar.
func (c *Client) GetEvent(ctx context.Context, calendarID, eventID string) (*calsyncv1.CalendarEvent, error) {
	resp, err := c.calendars.GetEvent(ctx, &calsyncv1.GetEventRequest{CalendarId: calendarID, EventId: eventID})
	return resp.GetEvent(), err
}

// ListCalendars yields every calendar matching req (nil: all), in id order,
// fetching pages as the loop asks for more. req's page token is ignored.
// An error is yielded once, last.
func (c *Client) ListCalendars(ctx context.Context, req *calsyncv1.ListCalendarsRequest) iter.Seq2[*calsyncv1.Calendar, error] {
	q := &calsyncv1.ListCalendarsRequest{}
	if req != nil {
		q = cloneMsg(req)
	}
	return pages(func(token string) ([]*calsyncv1.Calendar, string, error) {
		q.PageToken = token
		resp, err := c.calendars.ListCalendars(ctx, q)
		return resp.GetCalendars(), resp.GetNextPageToken(), err
	})
}

// ListEvents yields every event matching req, ordered by start time then
// id, fetching pages as the loop asks for more. req.CalendarId "" or "-"
// means every calendar; req's page token is ignored. An error is yielded
// once, last.
func (c *Client) ListEvents(ctx context.Context, req *calsyncv1.ListEventsRequest) iter.Seq2[*calsyncv1.CalendarEvent, error] {
	q := &calsyncv1.ListEventsRequest{}
	if req != nil {
		q = cloneMsg(req)
	}
	if q.CalendarId == "" {
		q.CalendarId = "-"
	}
	return pages(func(token string) ([]*calsyncv1.CalendarEvent, string, error) {
		q.PageToken = token
		resp, err := c.calendars.ListEvents(ctx, q)
		return resp.GetEvents(), resp.GetNextPageToken(), err
	})
}

// ResyncCalendar asks calsync to re-read every event of a calendar from its
// provider and returns the id of the delivery that will do it.
func (c *Client) ResyncCalendar(ctx context.Context, calendarID string) (deliveryID string, err error) {
	resp, err := c.calendars.ResyncCalendar(ctx, &calsyncv1.ResyncCalendarRequest{CalendarId: calendarID})
	return resp.GetDeliveryId(), err
}

// WatchEvents opens one raw WatchEvents stream. Most callers want
// [Client.Watch], which resumes, resynchronizes and records cursors.
func (c *Client) WatchEvents(ctx context.Context, req *calsyncv1.WatchEventsRequest) (grpc.ServerStreamingClient[calsyncv1.WatchEventsResponse], error) {
	return c.calendars.WatchEvents(ctx, req)
}

// IngestWebhook hands calsync a provider's webhook as the provider sent it:
// header carries the provider's credentials (Svix signature headers,
// postpress's auth header). It returns once the delivery is durably stored.
func (c *Client) IngestWebhook(ctx context.Context, provider string, body []byte, header http.Header) (*calsyncv1.IngestWebhookResponse, error) {
	md := metadata.MD{}
	for k, vs := range header {
		md.Append(strings.ToLower(k), vs...)
	}
	ctx = metadata.NewOutgoingContext(ctx, md)
	return c.webhooks.IngestWebhook(ctx, &calsyncv1.IngestWebhookRequest{
		Provider: provider,
		Body:     &httpbody.HttpBody{ContentType: header.Get("Content-Type"), Data: body},
	})
}

// ListDeliveries yields the webhook deliveries matching req (nil: all),
// newest first, fetching pages as the loop asks for more. An error is
// yielded once, last.
func (c *Client) ListDeliveries(ctx context.Context, req *calsyncv1.ListDeliveriesRequest) iter.Seq2[*calsyncv1.Delivery, error] {
	q := &calsyncv1.ListDeliveriesRequest{}
	if req != nil {
		q = cloneMsg(req)
	}
	return pages(func(token string) ([]*calsyncv1.Delivery, string, error) {
		q.PageToken = token
		resp, err := c.deliveries.ListDeliveries(ctx, q)
		return resp.GetDeliveries(), resp.GetNextPageToken(), err
	})
}

// RetryDelivery puts a dead-lettered delivery back in the queue and returns
// it; FAILED_PRECONDITION if it is not dead-lettered.
func (c *Client) RetryDelivery(ctx context.Context, deliveryID string) (*calsyncv1.Delivery, error) {
	resp, err := c.deliveries.RetryDelivery(ctx, &calsyncv1.RetryDeliveryRequest{DeliveryId: deliveryID})
	return resp.GetDelivery(), err
}

// pages turns a paged call into an iterator that follows next-page tokens.
func pages[T any](fetch func(token string) ([]T, string, error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		token := ""
		for {
			items, next, err := fetch(token)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, it := range items {
				if !yield(it, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			token = next
		}
	}
}
