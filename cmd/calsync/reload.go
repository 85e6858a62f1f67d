package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/calsync/calsync/metrics"
	"github.com/calsync/calsync/server"
)

// loadTokens reads the API tokens of --api-tokens and --api-tokens-file.
// It returns nil when neither is set: the API then needs no token (and the
// server refuses a non-loopback address unless told otherwise). A token
// file that exists but is empty yields an empty set, which accepts nobody:
// authentication is never turned off by a file losing its lines.
func loadTokens(cfg serveConfig) (*server.Tokens, error) {
	if cfg.apiTokens == "" && cfg.apiTokensFile == "" {
		return nil, nil
	}
	tokens, err := readTokens(cfg)
	if err != nil {
		return nil, usageError{err}
	}
	return server.NewTokens(tokens), nil
}

func readTokens(cfg serveConfig) ([]string, error) {
	tokens := splitList(cfg.apiTokens)
	if cfg.apiTokensFile != "" {
		fromFile, err := server.ReadTokenFile(cfg.apiTokensFile)
		if err != nil {
			return nil, fmt.Errorf("--api-tokens-file: %w", err)
		}
		tokens = append(tokens, fromFile...)
	}
	return tokens, nil
}

// handleReloads re-reads the API token file and the TLS certificate on
// SIGHUP (and when cfg.reload fires), without dropping a connection or a
// stream. A file that cannot be read leaves the previous tokens in force.
// The returned function stops listening for SIGHUP.
func handleReloads(ctx context.Context, cfg serveConfig, tokens *server.Tokens, srv *server.Server, m *metrics.Metrics, log *slog.Logger) func() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			case <-cfg.reload:
			}
			reload(cfg, tokens, srv, m, log)
			if cfg.reloaded != nil {
				cfg.reloaded()
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		cancel()
		<-done
	}
}

func reload(cfg serveConfig, tokens *server.Tokens, srv *server.Server, m *metrics.Metrics, log *slog.Logger) {
	if tokens != nil && cfg.apiTokensFile != "" {
		list, err := readTokens(cfg)
		if err != nil {
			m.TokenReload(false)
			log.Error("API tokens not reloaded; the previous ones stay in force", "err", err)
		} else {
			tokens.Set(list)
			m.TokenReload(true)
			log.Info("API tokens reloaded", "tokens", tokens.Len())
		}
	}
	if err := srv.ReloadTLS(); err != nil {
		log.Error("TLS certificate not reloaded; the previous one stays in use", "err", err)
	} else if cfg.tlsCert != "" {
		log.Info("TLS certificate reloaded")
	}
}
