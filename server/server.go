// Package server serves calsync's API: the gRPC services, the REST gateway
// in front of them, health and reflection, and an orderly shutdown.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/ingest"
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
}

// Server is a running calsync API.
type Server struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	grpc   *grpc.Server
	health *health.Server
	http   *http.Server

	grpcLis net.Listener
	httpLis net.Listener
	inproc  *bufconn.Listener
	gwConn  *grpc.ClientConn

	// stopping is closed when shutdown begins, so long-lived streams end
	// (clients resume elsewhere) instead of holding GracefulStop open.
	stopping chan struct{}

	// hub broadcasts committed changes to watch streams. watchCtx is
	// canceled when shutdown begins: it ends the streams and the change
	// log compaction loop, which closes compactionDone when it returns.
	hub            *watch.Hub
	watchCtx       context.Context
	stopWatch      context.CancelFunc
	compactionDone chan struct{}
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
	s := &Server{cfg: cfg, deps: deps, log: deps.Logger, stopping: make(chan struct{})}
	if cfg.Watch.Logger == nil {
		cfg.Watch.Logger = s.log
	}
	hub, err := watch.New(context.Background(), deps.Store, cfg.Watch)
	if err != nil {
		return nil, err
	}
	s.hub = hub
	s.watchCtx, s.stopWatch = context.WithCancel(context.Background())

	// A webhook body travels inside an IngestWebhookRequest: leave room for
	// the envelope, and never go below gRPC's usual 4 MiB.
	maxRecv := max(int(cfg.MaxWebhookBytes)+64<<10, 4<<20)
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(func(c codes.Code) logging.Level {
			switch c {
			case codes.OK, codes.Canceled, codes.NotFound, codes.InvalidArgument, codes.AlreadyExists:
				return logging.LevelDebug
			case codes.Internal, codes.Unknown, codes.DataLoss:
				return logging.LevelError
			}
			return logging.LevelWarn
		}),
	}
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		s.log.ErrorContext(ctx, "panic in handler", "panic", p)
		return status.Error(codes.Internal, "internal error")
	})
	s.grpc = grpc.NewServer(
		grpc.MaxRecvMsgSize(maxRecv),
		// Watch responses are encoded once and sent to every stream as is.
		grpc.ForceServerCodecV2(newFrameCodec()),
		grpc.ChainUnaryInterceptor(
			logging.UnaryServerInterceptor(slogAdapter(s.log), logOpts...),
			recovery.UnaryServerInterceptor(recoverOpt),
		),
		grpc.ChainStreamInterceptor(
			logging.StreamServerInterceptor(slogAdapter(s.log), logOpts...),
			recovery.StreamServerInterceptor(recoverOpt),
		),
		// Watch streams live for hours, often behind load balancers that
		// drop idle connections: ping them, and let clients ping us.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	calsyncv1.RegisterCalendarServiceServer(s.grpc, &calendarService{store: deps.Store, resync: deps.Processor.RequestResync, watch: hub, stopping: s.watchCtx, log: s.log})
	calsyncv1.RegisterWebhookServiceServer(s.grpc, &webhookService{receiver: deps.Receiver, maxBytes: cfg.MaxWebhookBytes, log: s.log})
	calsyncv1.RegisterDeliveryServiceServer(s.grpc, &deliveryService{store: deps.Store, kick: deps.Processor.Notify, log: s.log})
	s.health = health.NewServer()
	grpc_health_v1.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	return s, nil
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
	gw, err := newGateway(ctx, s.gwConn, s.cfg.WebhookHeaders)
	if err != nil {
		return err
	}
	s.http = &http.Server{
		Handler: limitWebhookBodies(s.cfg.MaxWebhookBytes, watchRequests(gw)),
		// No WriteTimeout: it would cut long-lived watch streams.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.compactionDone = make(chan struct{})
	go func() {
		defer close(s.compactionDone)
		s.hub.RunCompaction(s.watchCtx)
	}()
	go s.serveGRPC(s.grpcLis)
	go s.serveGRPC(s.inproc)
	go func() {
		if err := s.http.Serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	s.health.SetServingStatus("", grpc_health_v1.HealthCheckResponse_SERVING)
	for name := range s.grpc.GetServiceInfo() {
		s.health.SetServingStatus(name, grpc_health_v1.HealthCheckResponse_SERVING)
	}
	s.log.Info("calsync listening", "grpc_addr", s.GRPCAddr(), "http_addr", s.HTTPAddr())
	return nil
}

func (s *Server) serveGRPC(lis net.Listener) {
	if err := s.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
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
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("graceful gRPC stop timed out; closing connections")
		s.grpc.Stop()
		<-done
	}
	if err := s.http.Shutdown(ctx); err != nil {
		s.log.Warn("http shutdown", "err", err)
		s.http.Close()
	}
	s.gwConn.Close()
	<-s.compactionDone
	s.log.Info("calsync stopped")
}
