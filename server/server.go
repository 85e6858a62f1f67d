// Package server serves calsync's API: the gRPC services, the REST gateway
// in front of them, health and reflection, and an orderly shutdown.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/metrics"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/watch"
)

// Config is the server's validated configuration.
type Config struct {
	// GRPCAddr and HTTPAddr are the listen addresses; port 0 picks a free one.
	GRPCAddr string
	HTTPAddr string
	// MaxWebhookBytes caps a webhook body; larger ones get 413.
	MaxWebhookBytes int64
	// ShutdownTimeout bounds the graceful part of shutdown.
	ShutdownTimeout time.Duration
	// WebhookHeaders are extra request headers the gateway forwards to
	// IngestWebhook (the postpress authentication header).
	WebhookHeaders []string
	// Watch tunes WatchEvents: change log retention, memory, bookmarks.
	// Zero fields take the watch package's defaults.
	Watch watch.Config

	// Tokens are the API bearer tokens; nil means API calls need no token.
	// Webhooks, health and reflection never need one.
	Tokens *Tokens
	// TLS, if set, serves both listeners over TLS, and with a client CA
	// requires client certificates for API calls (mutual TLS).
	TLS TLSFiles
	// InsecureNoAuth allows listening on a non-loopback address with
	// neither API tokens nor mutual TLS. Without it, New refuses.
	InsecureNoAuth bool
	// MetricsAddr, if set, serves GET /metrics on a listener of its own,
	// without API authentication (for a port only the scraper can reach);
	// empty serves it on HTTPAddr, behind the API's authentication.
	MetricsAddr string
	// Limits bound requests, watch streams and keepalive.
	Limits Limits
	// CORSAllowedOrigins are the browser origins (scheme://host[:port]) that
	// may call the REST API and open its streams from their pages; empty
	// allows no cross-origin access. Webhooks are never open to them.
	CORSAllowedOrigins []string

	// PprofAddr, if set, serves the runtime profiles (net/http/pprof, the
	// command line excepted) on a listener of their own, under the same
	// rules as the API: TLS when configured, the API's credentials when
	// any are configured, and a loopback address otherwise.
	PprofAddr string

	// DatabaseCheckInterval is how often health pings a store that can
	// become unreachable (a [store.Pinger]); 0 means every second.
	DatabaseCheckInterval time.Duration
}

// Deps are the components the server exposes.
type Deps struct {
	Store  store.Store
	Logger *slog.Logger
	// Receiver verifies and commits webhooks.
	Receiver *ingest.Receiver
	// Processor works through the inbox; the server asks it for resyncs and
	// wakes it when a dead letter is retried.
	Processor *ingest.Processor
	// Metrics receives the server's measurements and is served on
	// /metrics; nil makes a fresh one (the caller then sees only the
	// server's own metrics).
	Metrics *metrics.Metrics
	// WhileLeading, if set, runs the change-log compaction only while this
	// replica leads the cluster (cluster.Elector.WhileLeading): it is the
	// same work on every replica of one database. Nil runs it always.
	WhileLeading func(ctx context.Context, fn func(context.Context))
}

// Server is a running calsync API.
type Server struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	grpc *grpc.Server
	// inprocGRPC serves the REST gateway's in-process connection.
	inprocGRPC *grpc.Server
	health     *health.Server
	http       *http.Server

	grpcLis net.Listener
	httpLis net.Listener
	inproc  *bufconn.Listener
	gwConn  *grpc.ClientConn
	// webhooks serves IngestWebhook over gRPC and, in process, to the
	// gateway.
	webhooks *webhookService

	// auth checks API credentials; tlsConfig and cert are nil without TLS.
	auth      *authenticator
	tlsConfig *tls.Config
	cert      *certificate
	metrics   *metrics.Metrics
	// metricsHTTP serves /metrics when it has a listener of its own.
	metricsHTTP *http.Server
	metricsLis  net.Listener
	// pprofHTTP serves the runtime profiles when PprofAddr is set.
	pprofHTTP *http.Server
	pprofLis  net.Listener

	// stopping is closed when shutdown begins, so long-lived streams end
	// (clients resume elsewhere) instead of holding GracefulStop open.
	stopping chan struct{}

	// hub broadcasts committed changes to watch streams. watchCtx is
	// canceled when shutdown begins: it ends the streams and the change
	// log compaction loop, which closes compactionDone when it returns.
	hub *watch.Hub
	// watchHTTP serves REST watch streams from hub, in process.
	watchHTTP      *watchHTTP
	watchCtx       context.Context
	stopWatch      context.CancelFunc
	compactionDone chan struct{}
	// databaseCheckDone is closed when the database check loop returns.
	databaseCheckDone chan struct{}
}

// New builds a server; Start makes it listen.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Store == nil || deps.Receiver == nil || deps.Processor == nil {
		return nil, errors.New("server: a store, a receiver and a processor are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if cfg.MaxWebhookBytes <= 0 {
		cfg.MaxWebhookBytes = 1 << 20
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if deps.Metrics == nil {
		deps.Metrics = metrics.New()
	}
	s := &Server{cfg: cfg, deps: deps, log: deps.Logger, stopping: make(chan struct{}), metrics: deps.Metrics}
	var err error
	s.auth = &authenticator{tokens: cfg.Tokens, requireCert: cfg.TLS.ClientCAFile != "", metrics: deps.Metrics}
	if err := checkExposure(cfg, s.auth.enabled()); err != nil {
		return nil, err
	}
	if s.cfg.CORSAllowedOrigins, err = ParseCORSOrigins(cfg.CORSAllowedOrigins); err != nil {
		return nil, err
	}
	if s.tlsConfig, s.cert, err = serverTLS(cfg.TLS); err != nil {
		return nil, err
	}
	keep := cfg.Limits.Keepalive.withDefaults()
	watchLimiter := &streamLimiter{method: watchMethod, what: "watch streams", max: int64(cfg.Limits.MaxWatchStreams), rejected: deps.Metrics.StreamRejected}
	healthLimiter := &streamLimiter{method: healthWatchMethod, what: "health watches", max: int64(cfg.Limits.MaxHealthWatches), rejected: deps.Metrics.HealthWatchRejected}
	if cfg.Watch.Logger == nil {
		cfg.Watch.Logger = s.log
	}
	if cfg.Watch.OnSent == nil {
		cfg.Watch.OnSent = deps.Metrics.ChangesSent
	}
	// REST watch streams encode as the rest of the REST API does.
	cfg.Watch.JSON = jsonMarshaler().MarshalOptions
	if cfg.Watch.OnFallback == nil {
		cfg.Watch.OnFallback = deps.Metrics.FellBack
	}
	hub, err := watch.New(context.Background(), deps.Store, cfg.Watch)
	if err != nil {
		return nil, err
	}
	s.hub = hub
	s.watchCtx, s.stopWatch = context.WithCancel(context.Background())

	// A webhook body travels inside an IngestWebhookRequest: leave room for
	// the envelope. Every other request is far smaller. A message is read
	// whole before any interceptor sees it, credentials included, so this
	// is what an unauthenticated client can make each stream hold.
	maxRecv := int(cfg.MaxWebhookBytes) + 64<<10
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(logLevel),
	}
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		s.log.ErrorContext(ctx, "panic in handler", "panic", p)
		return status.Error(codes.Internal, "internal error")
	})
	// Both gRPC servers serve the same services through the same
	// interceptors (so limits such as --max-watch-streams are shared).
	common := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxRecv),
		// Watch responses are encoded once and sent to every stream as is.
		grpc.ForceServerCodecV2(newFrameCodec()),
		// Metrics first, so refused calls are counted too; then
		// authentication, before any limit or handler is touched.
		grpc.ChainUnaryInterceptor(
			deps.Metrics.GRPC.UnaryServerInterceptor(),
			logging.UnaryServerInterceptor(slogAdapter(s.log), logOpts...),
			recovery.UnaryServerInterceptor(recoverOpt),
			s.auth.unary(),
			deadlineInterceptor(cfg.Limits.RequestTimeout),
		),
		grpc.ChainStreamInterceptor(
			bareWatchStream(),
			deps.Metrics.GRPC.StreamServerInterceptor(),
			logging.StreamServerInterceptor(slogAdapter(s.log), logOpts...),
			recovery.StreamServerInterceptor(recoverOpt),
			s.auth.stream(),
			watchLimiter.interceptor(),
			healthLimiter.interceptor(),
			observeWatch(deps.Metrics),
		),
	}
	var creds []grpc.ServerOption
	if s.tlsConfig != nil {
		creds = append(creds, grpc.Creds(credentials.NewTLS(s.tlsConfig.Clone())))
	}
	s.grpc = grpc.NewServer(append(append(creds, common...),
		// Watch streams live for hours, often behind load balancers that
		// drop idle connections: ping them, and let clients ping us.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keep.Time, Timeout: keep.Timeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keep.MinTime, PermitWithoutStream: true}),
		// A public server bounds what one connection can hold: its streams,
		// its header block, and how long it may take to say anything at
		// all (gRPC would wait 120 s for a silent connection).
		grpc.MaxConcurrentStreams(cfg.Limits.MaxStreamsPerConnection),
		grpc.MaxHeaderListSize(maxHeaderBytes),
		grpc.ConnectionTimeout(cfg.Limits.handshakeTimeout()),
	)...)
	// The REST gateway's in-process connection carries every REST call of
	// every client at once, REST watches included: the bounds of one
	// public connection would cap all of REST together. The HTTP listener
	// bounds each REST client instead.
	s.inprocGRPC = grpc.NewServer(common...)
	s.webhooks = &webhookService{receiver: deps.Receiver, maxBytes: cfg.MaxWebhookBytes, timeout: cfg.Limits.RequestTimeout, log: s.log, metrics: deps.Metrics,
		rejected: rejectionLog{sometimes: rate.Sometimes{First: 1, Interval: rejectionLogInterval}}}
	s.health = health.NewServer()
	calendars := &calendarService{store: deps.Store, resync: deps.Processor.RequestResync, watch: hub, stopping: s.watchCtx, log: s.log}
	deliveries := &deliveryService{store: deps.Store, kick: deps.Processor.Notify, log: s.log}
	for _, srv := range []*grpc.Server{s.grpc, s.inprocGRPC} {
		calsyncv1.RegisterCalendarServiceServer(srv, calendars)
		calsyncv1.RegisterWebhookServiceServer(srv, s.webhooks)
		calsyncv1.RegisterDeliveryServiceServer(srv, deliveries)
		grpc_health_v1.RegisterHealthServer(srv, s.health)
	}
	if err := registerReflection(s.grpc); err != nil {
		return nil, err
	}
	s.watchHTTP = &watchHTTP{hub: hub, limiter: watchLimiter, metrics: deps.Metrics, log: s.log, stopping: s.watchCtx, json: jsonMarshaler().MarshalOptions}
	deps.Metrics.GRPC.InitializeMetrics(s.grpc)
	deps.Metrics.WatchStreams(hub.Streams)
	deps.Metrics.WatchMemory(hub.MemoryBytes)
	deps.Metrics.ProcessingQueue(deps.Processor.Pending, deps.Processor.QueuedBytes)
	deps.Metrics.Inbox(deps.Store, s.log)
	deps.Metrics.WatchLag(deps.Store, hub.Head, s.log)
	return s, nil
}

// logLevel is the level a finished call is logged at: failures that are
// the client's own business stay at debug, like successes. So do refusals
// anyone can cause by the thousand without credentials (UNAUTHENTICATED,
// RESOURCE_EXHAUSTED): a line each would let them fill the disk, and
// metrics count every one (calsync_webhooks_received_total,
// calsync_api_auth_failures_total, the *_rejected_total counters).
func logLevel(c codes.Code) logging.Level {
	switch c {
	case codes.OK, codes.Canceled, codes.NotFound, codes.InvalidArgument, codes.AlreadyExists,
		codes.Unauthenticated, codes.ResourceExhausted:
		return logging.LevelDebug
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return logging.LevelError
	}
	return logging.LevelWarn
}

// slogAdapter lets the gRPC middleware log through slog.
func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// Start listens on both addresses and serves in the background. The gateway
// reaches the gRPC server through an in-process connection, so REST gets
// every gRPC feature, server streams included, with no extra network hop.
func (s *Server) Start(ctx context.Context) error {
	var err error
	if s.grpcLis, err = net.Listen("tcp", s.cfg.GRPCAddr); err != nil {
		return fmt.Errorf("listen grpc: %w", err)
	}
	if s.httpLis, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
		s.grpcLis.Close()
		return fmt.Errorf("listen http: %w", err)
	}
	if s.cfg.MetricsAddr != "" {
		if s.metricsLis, err = net.Listen("tcp", s.cfg.MetricsAddr); err != nil {
			s.grpcLis.Close()
			s.httpLis.Close()
			return fmt.Errorf("listen metrics: %w", err)
		}
	}
	if s.cfg.PprofAddr != "" {
		if s.pprofLis, err = net.Listen("tcp", s.cfg.PprofAddr); err != nil {
			s.grpcLis.Close()
			s.httpLis.Close()
			if s.metricsLis != nil {
				s.metricsLis.Close()
			}
			return fmt.Errorf("listen pprof: %w", err)
		}
	}
	s.inproc = bufconn.Listen(1 << 20)
	s.gwConn, err = grpc.NewClient("passthrough:///calsync-inproc",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return s.inproc.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(math.MaxInt32),
			grpc.MaxCallSendMsgSize(int(s.cfg.MaxWebhookBytes)+64<<10),
		),
	)
	if err != nil {
		return fmt.Errorf("gateway connection: %w", err)
	}
	gw, err := newGateway(ctx, s.gwConn, inProcessWebhooks{s.webhooks}, s.cfg.WebhookHeaders)
	if err != nil {
		return err
	}
	s.http = s.newHTTPServer(s.httpHandler(gw))
	s.compactionDone = make(chan struct{})
	go func() {
		defer close(s.compactionDone)
		if s.deps.WhileLeading != nil {
			s.deps.WhileLeading(s.watchCtx, s.hub.RunCompaction)
			return
		}
		s.hub.RunCompaction(s.watchCtx)
	}()
	go s.serveGRPC(s.grpc, s.grpcLis)
	go s.serveGRPC(s.inprocGRPC, s.inproc)
	go s.serveHTTP(s.http, s.httpLis)
	if s.metricsLis != nil {
		mux := http.NewServeMux()
		mux.Handle(metricsPath, s.metrics.Handler())
		s.metricsHTTP = s.newHTTPServer(mux)
		go s.serveHTTP(s.metricsHTTP, s.metricsLis)
	}
	if s.pprofLis != nil {
		// No path of it is public: every one needs the API's credentials.
		s.pprofHTTP = s.newHTTPServer(s.auth.requireHTTPAuth(true, pprofHandler()))
		go s.serveHTTP(s.pprofHTTP, s.pprofLis)
	}
	s.setServing(true)
	s.databaseCheckDone = make(chan struct{})
	go func() {
		defer close(s.databaseCheckDone)
		s.checkDatabase()
	}()
	attrs := []any{"grpc_addr", s.GRPCAddr(), "http_addr", s.HTTPAddr(), "tls", s.tlsConfig != nil,
		"mutual_tls", s.auth.requireCert, "api_tokens", s.cfg.Tokens != nil}
	if s.metricsLis != nil {
		attrs = append(attrs, "metrics_addr", s.metricsLis.Addr().String())
	}
	if s.pprofLis != nil {
		attrs = append(attrs, "pprof_addr", s.pprofLis.Addr().String())
	}
	s.log.Info("calsync listening", attrs...)
	return nil
}

// newHTTPServer is an HTTP server with the bounds every listener of
// calsync has: a silent or slow client is closed after the handshake
// timeout, an idle one after two minutes, and headers are bounded in
// bytes. There is no WriteTimeout: it would cut long-lived watch streams.
func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	var tc *tls.Config
	if s.tlsConfig != nil {
		// Each server gets its own copy: serving sets up HTTP/2 in it.
		// The certificate is still the reloadable one (GetCertificate).
		tc = s.tlsConfig.Clone()
	}
	return &http.Server{
		Handler:           h,
		TLSConfig:         tc,
		ReadHeaderTimeout: s.cfg.Limits.handshakeTimeout(),
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// serveHTTP serves one HTTP listener, over TLS when configured.
func (s *Server) serveHTTP(srv *http.Server, lis net.Listener) {
	var err error
	if s.tlsConfig != nil {
		err = srv.ServeTLS(lis, "", "")
	} else {
		err = srv.Serve(lis)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("http server stopped", "err", err)
	}
}

// MetricsAddr is the address of the metrics listener, or HTTPAddr when
// /metrics is served there.
func (s *Server) MetricsAddr() string {
	if s.metricsLis != nil {
		return s.metricsLis.Addr().String()
	}
	return s.HTTPAddr()
}

// ReloadTLS re-reads the server certificate and key (client CAs are read
// only at start), so a rotated certificate is used without a restart.
// Connections already open keep theirs.
func (s *Server) ReloadTLS() error {
	if s.cert == nil {
		return nil
	}
	return s.cert.load()
}

func (s *Server) serveGRPC(srv *grpc.Server, lis net.Listener) {
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		s.log.Error("grpc server stopped", "err", err)
	}
}

// GRPCAddr is the address the gRPC server listens on.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr is the address the REST gateway listens on.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// Stopping is closed when shutdown begins.
func (s *Server) Stopping() <-chan struct{} { return s.stopping }

// Shutdown stops serving in the order that loses no request: health says
// NOT_SERVING (load balancers stop sending), open streams are told to end,
// gRPC drains (forced after the timeout), then the HTTP gateway drains.
// The caller closes the store afterwards.
func (s *Server) Shutdown(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
	defer cancel()
	s.health.Shutdown()
	close(s.stopping)
	s.stopWatch()

	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		wg.Go(s.grpc.GracefulStop)
		wg.Go(s.inprocGRPC.GracefulStop)
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("graceful gRPC stop timed out; closing connections")
		s.grpc.Stop()
		s.inprocGRPC.Stop()
		<-done
	}
	if err := s.http.Shutdown(ctx); err != nil {
		s.log.Warn("http shutdown", "err", err)
		s.http.Close()
	}
	if s.metricsHTTP != nil {
		if err := s.metricsHTTP.Shutdown(ctx); err != nil {
			s.metricsHTTP.Close()
		}
	}
	if s.pprofHTTP != nil {
		// A profile being taken is not worth waiting for.
		s.pprofHTTP.Close()
	}
	s.gwConn.Close()
	<-s.compactionDone
	<-s.databaseCheckDone
	s.log.Info("calsync stopped")
}
