package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/calsync/calsync/cluster"
	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/metrics"
	"github.com/calsync/calsync/provider/postpress"
	"github.com/calsync/calsync/provider/recall"
	"github.com/calsync/calsync/server"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/postgres"
	"github.com/calsync/calsync/store/sqlite"
	"github.com/calsync/calsync/watch"
)

// serveConfig is everything `calsync serve` is configured with; each flag
// has an environment variable: --http-addr is CALSYNC_HTTP_ADDR.
type serveConfig struct {
	httpAddr        string
	grpcAddr        string
	dbPath          string
	synchronous     string
	dbMaxConns      int
	dbOpenTimeout   time.Duration
	dbPollInterval  time.Duration
	dbNotify        bool
	maxWebhookBytes int64
	shutdownTimeout time.Duration
	logLevel        string
	logFormat       string

	recallWebhookSecrets string
	recallAPIKey         string
	recallAPIURL         string
	recallResyncInterval time.Duration
	postpressAuthHeader  string
	postpressAuthSecrets string
	workers              int
	recallWorkers        int
	processingQueueBytes int64
	maxClockSkew         time.Duration
	claimTTL             time.Duration
	claimPollInterval    time.Duration

	changeRetention     time.Duration
	dedupeWindow        time.Duration
	deliveryRetention   time.Duration
	watchMemory         int
	watchMemoryBytes    int64
	minBookmarkInterval time.Duration

	// Authentication, TLS, metrics and limits: see the "Operating calsync"
	// section of the README.
	apiTokens         string
	apiTokensFile     string
	insecureNoAuth    bool
	tlsCert           string
	tlsKey            string
	tlsClientCA       string
	metricsAddr       string
	requestTimeout    time.Duration
	maxWatchStreams   int
	keepaliveTime     time.Duration
	keepaliveTimeout  time.Duration
	keepaliveMinTime  time.Duration
	maxStreamsPerConn uint
	maxHealthWatches  int
	handshakeTimeout  time.Duration
	corsOrigins       string

	// reload, if set, triggers the same reload as SIGHUP (tests use it);
	// reloaded, if set, is called after each reload.
	reload   chan struct{}
	reloaded func()

	// sqliteMaxBatch is the most deliveries one inbox transaction commits
	// (0: the store's default); 1 turns group commit off, which only a
	// benchmark baseline wants.
	sqliteMaxBatch int
	// pprofAddr, when set, serves net/http/pprof there, apart from the
	// public listeners, so a slow figure can be profiled in place; it is
	// guarded like the API (server.Config.PprofAddr).
	pprofAddr string
	// gcPercent and memoryLimit are the garbage collector's target and
	// soft memory limit (see applyGCSettings); GOGC and GOMEMLIMIT, when
	// set, win.
	gcPercent   int
	memoryLimit string

	// now, if set, is the clock of the inbox, the processor and pruning
	// (tests move it to cross the dedupe window); nil means time.Now.
	now func() time.Time
	// pruneInterval, if set, is how often the inbox is pruned (tests make
	// it short); 0 means ingest's default.
	pruneInterval time.Duration
	// replicaID, if set, is this replica's identity in leases (tests run
	// several replicas in one process); empty means cluster.ReplicaID().
	replicaID string

	// ready, if set, is called once both listeners are up (tests use it to
	// learn the ports picked for :0).
	ready func(grpcAddr, httpAddr string)
}

func (c *serveConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.httpAddr, "http-addr", "127.0.0.1:8080", "REST gateway listen address")
	fs.StringVar(&c.grpcAddr, "grpc-addr", "127.0.0.1:9090", "gRPC listen address")
	fs.StringVar(&c.dbPath, "db", "./calsync.db", "SQLite database file (created if missing), or a PostgreSQL URL postgres://USER@HOST:PORT/DB?sslmode=... shared by replicas")
	fs.IntVar(&c.dbMaxConns, "db-max-conns", 0, "most connections to PostgreSQL this process opens (0: the URL's pool_max_conns, else 16)")
	fs.DurationVar(&c.dbOpenTimeout, "db-open-timeout", 2*time.Minute, "how long serve keeps retrying, with backoff, to reach an unreachable PostgreSQL at start before it exits (0: try once)")
	fs.DurationVar(&c.dbPollInterval, "db-poll-interval", postgres.DefaultPollInterval, "PostgreSQL: how often each replica reads the change log for other replicas' changes when no notification came; the longest they take to reach its watchers with --db-notify off")
	fs.BoolVar(&c.dbNotify, "db-notify", true, "PostgreSQL: wake other replicas' watchers at once through LISTEN/NOTIFY (needs a session, not a transaction-pooling PgBouncer); false polls only, every --db-poll-interval")
	fs.StringVar(&c.synchronous, "sqlite-synchronous", "FULL", "SQLite synchronous mode: FULL survives power loss, NORMAL only process crashes")
	fs.Int64Var(&c.maxWebhookBytes, "max-webhook-bytes", 1<<20, "largest accepted webhook body; larger ones get 413")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long shutdown waits for requests under way")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&c.recallWebhookSecrets, "recall-webhook-secrets", "", "comma-separated Svix signing secrets (whsec_...) for Recall webhooks; several allow rotation")
	fs.StringVar(&c.recallAPIKey, "recall-api-key", "", "Recall API key, used to re-fetch calendars and events")
	fs.StringVar(&c.recallAPIURL, "recall-api-url", "https://us-east-1.recall.ai", "Recall API base URL of your region")
	fs.DurationVar(&c.recallResyncInterval, "recall-resync-interval", 6*time.Hour, "how often every connected Recall calendar is fully reconciled (0 disables)")
	fs.StringVar(&c.postpressAuthHeader, "postpress-auth-header", "Postpress-Auth", "request header carrying the postpress webhook secret")
	fs.StringVar(&c.postpressAuthSecrets, "postpress-auth-secrets", "", "comma-separated accepted values of the postpress auth header")
	fs.IntVar(&c.workers, "workers", 32, "deliveries processed in parallel")
	fs.IntVar(&c.recallWorkers, "recall-workers", ingest.DefaultRemoteWorkers, "Recall deliveries processed in parallel, by workers of their own, so Recall's rate limits never hold up other deliveries; also how many calendars one merged event listing can answer")
	fs.Int64Var(&c.processingQueueBytes, "processing-queue-bytes", ingest.DefaultMaxQueuedBytes, "most bytes of deliveries held in memory for processing; the rest wait in the inbox")
	fs.DurationVar(&c.claimTTL, "claim-ttl", ingest.DefaultClaimTTL, "PostgreSQL: how long a replica's claim on a calendar's deliveries, and the leader's lease, last unless renewed (every third of it; at least 1s); a dead replica's work moves after about this long")
	fs.DurationVar(&c.claimPollInterval, "claim-poll-interval", ingest.DefaultClaimPollInterval, "PostgreSQL: how often a replica looks for deliveries to claim, besides at once when it receives one")
	fs.DurationVar(&c.maxClockSkew, "max-clock-skew", ingest.DefaultMaxClockSkew, "how far ahead of calsync's clock a provider's updated_at may be; an event beyond it is refused (postpress: dead-lettered)")
	fs.DurationVar(&c.changeRetention, "change-retention", watch.DefaultRetention, "how long the change log keeps changes; watchers with older cursors must re-list")
	fs.DurationVar(&c.dedupeWindow, "dedupe-window", store.DefaultDedupeWindow, "how long a webhook absorbs identical copies (the providers' retries); the same body later is a new delivery")
	fs.DurationVar(&c.deliveryRetention, "delivery-retention", defaultDeliveryRetention, "how long finished deliveries (dead letters included) stay in the inbox; at least --dedupe-window")
	fs.IntVar(&c.watchMemory, "watch-memory-changes", watch.DefaultTailSize, "newest changes kept in memory for watch streams to share; streams further behind read the change log")
	fs.Int64Var(&c.watchMemoryBytes, "watch-memory-bytes", watch.DefaultTailBytes, "most bytes the changes kept in memory for watch streams may take; streams further behind read the change log")
	fs.DurationVar(&c.minBookmarkInterval, "min-bookmark-interval", watch.DefaultMinBookmarkInterval, "shortest bookmark interval a watch may ask for")
	fs.StringVar(&c.apiTokens, "api-tokens", "", "comma-separated bearer tokens accepted on the API (gRPC and REST); webhooks, health and reflection need none")
	fs.StringVar(&c.apiTokensFile, "api-tokens-file", "", "file of accepted API bearer tokens, one per line (# comments); re-read on SIGHUP")
	fs.BoolVar(&c.insecureNoAuth, "insecure-no-auth", false, "allow listening on a non-loopback address with neither API tokens nor mutual TLS")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM certificate (chain) for TLS on the gRPC, HTTP and metrics listeners; re-read on SIGHUP")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.tlsClientCA, "tls-client-ca", "", "PEM CA bundle: API calls then need a client certificate it signed (mutual TLS); webhooks and health do not")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "serve GET /metrics on this address, without API authentication (empty: on --http-addr, behind the API's authentication)")
	fs.DurationVar(&c.requestTimeout, "request-timeout", 30*time.Second, "longest a unary API call may run before DEADLINE_EXCEEDED (0: no limit)")
	fs.IntVar(&c.maxWatchStreams, "max-watch-streams", 10000, "most watch streams open at once; more get RESOURCE_EXHAUSTED (0: no limit)")
	fs.DurationVar(&c.keepaliveTime, "grpc-keepalive-time", server.DefaultKeepalive.Time, "ping a gRPC connection quiet for this long")
	fs.DurationVar(&c.keepaliveTimeout, "grpc-keepalive-timeout", server.DefaultKeepalive.Timeout, "close a gRPC connection whose ping is not answered within this")
	fs.DurationVar(&c.keepaliveMinTime, "grpc-keepalive-min-time", server.DefaultKeepalive.MinTime, "shortest interval between client pings tolerated; clients pinging more often are disconnected")
	fs.StringVar(&c.corsOrigins, "cors-allowed-origins", "", "comma-separated browser origins (scheme://host[:port]) allowed to call the REST API and its streams from their pages (empty: none); never webhooks")
	fs.UintVar(&c.maxStreamsPerConn, "grpc-max-streams-per-connection", 1000, "most gRPC calls and streams open at once on one connection; a client opening more waits (0: no limit)")
	fs.IntVar(&c.maxHealthWatches, "max-health-watches", 1000, "most gRPC health watches (Health/Watch, which need no token) open at once; more get RESOURCE_EXHAUSTED (0: no limit)")
	fs.DurationVar(&c.handshakeTimeout, "handshake-timeout", server.DefaultHandshakeTimeout, "longest a new connection may take for its TLS handshake and first request headers (gRPC: its HTTP/2 preface); slower or silent ones are closed")
	fs.IntVar(&c.sqliteMaxBatch, "sqlite-max-batch", 0, "most webhook deliveries committed in one transaction (0: store default; 1 disables group commit, for benchmarks)")
	fs.StringVar(&c.pprofAddr, "pprof-addr", "", "serve net/http/pprof (the command line excepted) on this address (empty: off), with TLS and the API's authentication; loopback only without it")
	fs.IntVar(&c.gcPercent, "gc-percent", defaultGCPercent, "garbage collection target, as GOGC (which, when set, wins); -1 collects only at --memory-limit")
	fs.StringVar(&c.memoryLimit, "memory-limit", "", "soft limit of the Go heap, such as 512MiB, as GOMEMLIMIT (which, when set, wins); empty: 80% of the container's memory limit, none without one; off: none")
}

// openStore opens the store --db names: a PostgreSQL database for a
// postgres:// or postgresql:// URL, otherwise a SQLite file. It returns the
// store and what to log about it, with any password in the URL hidden.
func openStore(ctx context.Context, cfg serveConfig, log *slog.Logger, m *metrics.Metrics) (store.Store, []any, error) {
	if postgres.IsURL(cfg.dbPath) {
		db, err := openPostgres(ctx, cfg, log, m)
		if err != nil {
			return nil, nil, err
		}
		return db, []any{"backend", "postgres", "url", postgres.Redact(cfg.dbPath)}, nil
	}
	db, err := sqlite.Open(ctx, cfg.dbPath, sqlite.Options{
		Synchronous:  strings.ToUpper(cfg.synchronous),
		MaxBatch:     cfg.sqliteMaxBatch,
		DedupeWindow: cfg.dedupeWindow,
		Logger:       log,
		Now:          cfg.now,
		OnBatch:      m.InboxBatch,
		OnCheckpoint: m.SQLiteCheckpoint,
	})
	if err != nil {
		return nil, nil, err
	}
	return db, []any{"backend", "sqlite", "path", cfg.dbPath, "synchronous", strings.ToUpper(cfg.synchronous)}, nil
}

// openPostgres opens the PostgreSQL store, retrying with exponential
// backoff for up to --db-open-timeout while the database is unreachable (a
// replica scheduled before its database is up, or started during a
// failover, then waits for it instead of crash-looping). Other errors (a
// bad URL, a refused password, a failed migration) end it at once.
func openPostgres(ctx context.Context, cfg serveConfig, log *slog.Logger, m *metrics.Metrics) (*postgres.DB, error) {
	opts := postgres.Options{
		MaxConns:     cfg.dbMaxConns,
		MaxBatch:     cfg.sqliteMaxBatch,
		DedupeWindow: cfg.dedupeWindow,
		Logger:       log,
		Now:          cfg.now,
		OnBatch:      m.InboxBatch,
		PollInterval: cfg.dbPollInterval,
		PollOnly:     !cfg.dbNotify,
	}
	open := func() (*postgres.DB, error) {
		db, err := postgres.Open(ctx, cfg.dbPath, opts)
		if err != nil && !errors.Is(err, store.ErrUnavailable) {
			return nil, backoff.Permanent(err)
		}
		return db, err
	}
	if cfg.dbOpenTimeout <= 0 {
		return postgres.Open(ctx, cfg.dbPath, opts)
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = 250*time.Millisecond, 5*time.Second
	db, err := backoff.Retry(ctx, open,
		backoff.WithBackOff(b),
		backoff.WithMaxElapsedTime(cfg.dbOpenTimeout),
		backoff.WithNotify(func(err error, next time.Duration) {
			// The error names the redacted URL, never the password.
			log.Warn("database unreachable; retrying", "url", postgres.Redact(cfg.dbPath), "retry_in", next, "err", err)
		}))
	if err != nil && errors.Is(err, store.ErrUnavailable) {
		return nil, fmt.Errorf("database %s still unreachable after %v (--db-open-timeout): %w",
			postgres.Redact(cfg.dbPath), cfg.dbOpenTimeout, err)
	}
	return db, err
}

// defaultDeliveryRetention keeps finished deliveries a week, as long as the
// change log keeps changes: long past the dedupe window, and long enough for
// an operator back from a weekend to find and retry a dead letter.
const defaultDeliveryRetention = 7 * 24 * time.Hour

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func newFlagSet() *flag.FlagSet { return flag.NewFlagSet("calsync serve", flag.ContinueOnError) }

func serveCommand(stderr io.Writer) *ffcli.Command {
	var cfg serveConfig
	fs := newFlagSet()
	cfg.register(fs)
	return &ffcli.Command{
		Name:       "serve",
		ShortUsage: "calsync serve [flags]",
		ShortHelp:  "run the calsync service (gRPC, REST gateway, webhook ingestion)",
		LongHelp:   "Every flag can also be set through the environment: --http-addr is CALSYNC_HTTP_ADDR, and so on.",
		FlagSet:    fs,
		Options:    []ff.Option{ff.WithEnvVarPrefix("CALSYNC")},
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("serve takes no arguments, got %q", args)}
			}
			return serve(ctx, cfg, stderr)
		},
	}
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level: %w", err)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format must be json or text, not %q", format)}
}

// serve runs the service until ctx is done. Shutdown order: the server
// drains (health, streams, gRPC, HTTP), then the store closes.
func serve(ctx context.Context, cfg serveConfig, stderr io.Writer) error {
	log, err := newLogger(stderr, cfg.logLevel, cfg.logFormat)
	if err != nil {
		return err
	}
	if cfg.maxWebhookBytes <= 0 {
		return usageError{fmt.Errorf("--max-webhook-bytes must be positive")}
	}
	if cfg.requestTimeout < 0 || cfg.maxWatchStreams < 0 || cfg.keepaliveTime <= 0 || cfg.keepaliveTimeout <= 0 || cfg.keepaliveMinTime <= 0 {
		return usageError{fmt.Errorf("--request-timeout and --max-watch-streams must not be negative; the --grpc-keepalive-* durations must be positive")}
	}
	if cfg.maxHealthWatches < 0 || cfg.handshakeTimeout <= 0 || cfg.maxStreamsPerConn > math.MaxUint32 {
		return usageError{fmt.Errorf("--max-health-watches must not be negative, --handshake-timeout must be positive, --grpc-max-streams-per-connection must fit 32 bits")}
	}
	corsOrigins, err := server.ParseCORSOrigins(splitList(cfg.corsOrigins))
	if err != nil {
		return usageError{fmt.Errorf("--cors-allowed-origins: %w", err)}
	}
	tokens, err := loadTokens(cfg)
	if err != nil {
		return err
	}
	gc, err := applyGCSettings(cfg.gcPercent, cfg.memoryLimit, os.Getenv)
	if err != nil {
		return usageError{err}
	}
	log.Info("garbage collection", "gc_percent", gc.GCPercent, "memory_limit", gc.MemoryLimit)
	m := metrics.New()
	if cfg.sqliteMaxBatch < 0 {
		return usageError{fmt.Errorf("--sqlite-max-batch must not be negative")}
	}
	if cfg.dedupeWindow <= 0 || cfg.deliveryRetention < cfg.dedupeWindow {
		return usageError{fmt.Errorf("--dedupe-window must be positive and --delivery-retention (%v) at least as long (%v): a pruned delivery no longer absorbs its retries",
			cfg.deliveryRetention, cfg.dedupeWindow)}
	}
	if cfg.dbMaxConns < 0 {
		return usageError{fmt.Errorf("--db-max-conns must not be negative")}
	}
	if cfg.dbPollInterval <= 0 {
		return usageError{fmt.Errorf("--db-poll-interval must be positive")}
	}
	db, dbInfo, err := openStore(ctx, cfg, log, m)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer db.Close()

	intake := &ingest.Intake{}
	if cfg.recallWorkers <= 0 || cfg.processingQueueBytes <= 0 || cfg.watchMemoryBytes <= 0 || cfg.maxClockSkew <= 0 {
		return usageError{fmt.Errorf("--recall-workers, --processing-queue-bytes, --watch-memory-bytes and --max-clock-skew must be positive")}
	}
	if cfg.claimTTL < time.Second || cfg.claimPollInterval <= 0 {
		return usageError{fmt.Errorf("--claim-ttl must be at least 1s and --claim-poll-interval positive")}
	}
	// The elector decides which replica runs the work done once per
	// cluster; on SQLite this process always leads.
	elector := cluster.NewElector(db, cluster.ElectorConfig{Owner: cfg.replicaID, TTL: cfg.claimTTL, Logger: log, OnChange: m.LeadershipChanged})
	m.Leader(elector.Leading)
	electorCtx, stopElector := context.WithCancel(context.WithoutCancel(ctx))
	electorDone := make(chan struct{})
	go func() {
		elector.Run(electorCtx)
		close(electorDone)
	}()
	// The elector stops after the processor and pruning (deferred
	// later, run earlier), giving the lease up before the store closes.
	defer func() {
		stopElector()
		<-electorDone
	}()
	procCfg := ingest.ProcessorConfig{Workers: cfg.workers, Intake: intake, ResyncInterval: cfg.recallResyncInterval, Logger: log,
		OnProcessed: m.Processed, Now: cfg.now, MaxClockSkew: cfg.maxClockSkew,
		Owner: elector.Owner(), ClaimTTL: cfg.claimTTL, ClaimPollInterval: cfg.claimPollInterval, WhileLeading: elector.WhileLeading}
	procCfg.RemoteWorkers, procCfg.MaxQueuedBytes, procCfg.MaxDeliveryBytes = cfg.recallWorkers, cfg.processingQueueBytes, cfg.maxWebhookBytes
	if cfg.recallResyncInterval == 0 {
		procCfg.ResyncInterval = -1
	}
	if cfg.recallAPIKey != "" {
		opts := []recall.ClientOption{recall.WithLogger(log), recall.WithObserver(m.RecallRequest)}
		if rl, ok := db.(store.RateLimiter); ok {
			// Recall counts its limits per workspace: replicas share them.
			opts = append(opts, recall.WithSharedRateLimiter(rl))
		}
		client := recall.NewClient(cfg.recallAPIURL, cfg.recallAPIKey, opts...)
		m.RecallListingsWaiting(client.WaitingListings)
		procCfg.Recall = client
	}
	processor := ingest.NewProcessor(db, procCfg)
	recvCfg := ingest.ReceiverConfig{Notify: processor.Notify, Intake: intake, Now: cfg.now, Processor: processor}
	if secrets := splitList(cfg.recallWebhookSecrets); len(secrets) > 0 {
		if recvCfg.Recall, err = recall.NewVerifier(secrets); err != nil {
			return usageError{fmt.Errorf("--recall-webhook-secrets: %w", err)}
		}
	}
	if secrets := splitList(cfg.postpressAuthSecrets); len(secrets) > 0 {
		if recvCfg.Postpress, err = postpress.NewAuthenticator(cfg.postpressAuthHeader, secrets); err != nil {
			return usageError{fmt.Errorf("--postpress-auth-secrets: %w", err)}
		}
	}
	if cfg.changeRetention <= 0 || cfg.watchMemory <= 0 || cfg.minBookmarkInterval <= 0 {
		return usageError{fmt.Errorf("--change-retention, --watch-memory-changes and --min-bookmark-interval must be positive")}
	}
	srv, err := server.New(server.Config{
		Watch: watch.Config{
			Retention:           cfg.changeRetention,
			TailSize:            cfg.watchMemory,
			TailBytes:           cfg.watchMemoryBytes,
			MinBookmarkInterval: cfg.minBookmarkInterval,
		},
		GRPCAddr:           cfg.grpcAddr,
		HTTPAddr:           cfg.httpAddr,
		MaxWebhookBytes:    cfg.maxWebhookBytes,
		ShutdownTimeout:    cfg.shutdownTimeout,
		WebhookHeaders:     []string{cfg.postpressAuthHeader},
		Tokens:             tokens,
		TLS:                server.TLSFiles{CertFile: cfg.tlsCert, KeyFile: cfg.tlsKey, ClientCAFile: cfg.tlsClientCA},
		InsecureNoAuth:     cfg.insecureNoAuth,
		MetricsAddr:        cfg.metricsAddr,
		PprofAddr:          cfg.pprofAddr,
		CORSAllowedOrigins: corsOrigins,
		Limits: server.Limits{
			RequestTimeout:          cfg.requestTimeout,
			MaxWatchStreams:         cfg.maxWatchStreams,
			Keepalive:               server.Keepalive{Time: cfg.keepaliveTime, Timeout: cfg.keepaliveTimeout, MinTime: cfg.keepaliveMinTime},
			MaxStreamsPerConnection: uint32(cfg.maxStreamsPerConn),
			MaxHealthWatches:        cfg.maxHealthWatches,
			HandshakeTimeout:        cfg.handshakeTimeout,
		},
	}, server.Deps{Store: db, Logger: log, Receiver: ingest.NewReceiver(db, recvCfg), Processor: processor, Metrics: m,
		WhileLeading: elector.WhileLeading})
	if errors.Is(err, server.ErrNoAuthentication) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	log.Info("database open", append(dbInfo, "store_id", db.ID())...)
	log.Info("providers", "recall_webhooks", recvCfg.Recall != nil, "recall_api", procCfg.Recall != nil,
		"postpress_webhooks", recvCfg.Postpress != nil)

	// The processor outlives the server's drain, so deliveries accepted in
	// the last moments are worked on until shutdown; it stops before the
	// store closes.
	procCtx, stopProcessor := context.WithCancel(context.WithoutCancel(ctx))
	processorDone := make(chan struct{})
	go func() {
		processor.Run(procCtx)
		close(processorDone)
	}()
	defer func() {
		stopProcessor()
		<-processorDone
	}()
	// Pruning stops with the processor, before the store closes. The
	// inbox is the cluster's: the leader prunes it.
	pruningDone := make(chan struct{})
	go func() {
		defer close(pruningDone)
		elector.WhileLeading(procCtx, func(ctx context.Context) {
			ingest.RunPruning(ctx, db, ingest.PruneConfig{Retention: cfg.deliveryRetention, Interval: cfg.pruneInterval,
				Now: cfg.now, Logger: log, OnPruned: m.InboxPruned})
		})
	}()
	defer func() {
		stopProcessor()
		<-pruningDone
	}()
	if err := srv.Start(ctx); err != nil {
		return err
	}
	stopReloads := handleReloads(ctx, cfg, tokens, srv, m, log)
	defer stopReloads()
	if cfg.ready != nil {
		cfg.ready(srv.GRPCAddr(), srv.HTTPAddr())
	}
	<-ctx.Done()
	srv.Shutdown(context.WithoutCancel(ctx))
	return nil
}
