package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/calsync/calsync/server"
	"github.com/calsync/calsync/store/sqlite"
)

// serveConfig is everything `calsync serve` is configured with; each flag
// has an environment variable: --http-addr is CALSYNC_HTTP_ADDR.
type serveConfig struct {
	httpAddr        string
	grpcAddr        string
	dbPath          string
	synchronous     string
	maxWebhookBytes int64
	shutdownTimeout time.Duration
	logLevel        string
	logFormat       string
}

func (c *serveConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.httpAddr, "http-addr", "127.0.0.1:8080", "REST gateway listen address")
	fs.StringVar(&c.grpcAddr, "grpc-addr", "127.0.0.1:9090", "gRPC listen address")
	fs.StringVar(&c.dbPath, "db", "./calsync.db", "SQLite database file (created if missing)")
	fs.StringVar(&c.synchronous, "sqlite-synchronous", "FULL", "SQLite synchronous mode: FULL survives power loss, NORMAL only process crashes")
	fs.Int64Var(&c.maxWebhookBytes, "max-webhook-bytes", 1<<20, "largest accepted webhook body; larger ones get 413")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long shutdown waits for requests under way")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or text")
}

func serveCommand(stderr io.Writer) *ffcli.Command {
	var cfg serveConfig
	fs := flag.NewFlagSet("calsync serve", flag.ContinueOnError)
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
	db, err := sqlite.Open(ctx, cfg.dbPath, sqlite.Options{Synchronous: strings.ToUpper(cfg.synchronous), Logger: log})
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer db.Close()

	srv, err := server.New(server.Config{
		GRPCAddr:        cfg.grpcAddr,
		HTTPAddr:        cfg.httpAddr,
		MaxWebhookBytes: cfg.maxWebhookBytes,
		ShutdownTimeout: cfg.shutdownTimeout,
	}, server.Deps{Store: db, Logger: log})
	if err != nil {
		return err
	}
	log.Info("database open", "path", cfg.dbPath, "store_id", db.ID(), "synchronous", strings.ToUpper(cfg.synchronous))
	return srv.Run(ctx)
}
