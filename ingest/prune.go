package ingest

import (
	"context"
	"log/slog"
	"time"

	"github.com/calsync/calsync/store"
)

// PruneConfig tunes [RunPruning].
type PruneConfig struct {
	// Retention is how long a finished delivery (DONE, IGNORED or DEAD)
	// stays in the inbox after it was received and finished. It must be
	// at least the store's dedupe window, or pruned deliveries would stop
	// absorbing their providers' retries.
	Retention time.Duration
	// Interval is how often pruning runs; 0 means a tenth of Retention, at
	// most a minute.
	Interval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives failures and what was pruned; nil discards them.
	Logger *slog.Logger
	// OnPruned, if set, is told what every run removed (metrics).
	OnPruned func(store.PrunedDeliveries)
}

// RunPruning keeps the inbox from growing without bound: once at start,
// then every Interval until ctx is done, it removes the deliveries finished
// for longer than Retention. Dead letters go too once they have been dead
// that long, and are counted apart so an operator sees what was never
// retried. Failures are logged and tried again at the next tick.
func RunPruning(ctx context.Context, inbox store.Inbox, cfg PruneConfig) {
	if cfg.Interval <= 0 {
		cfg.Interval = min(cfg.Retention/10, time.Minute)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		p, err := inbox.PruneDeliveries(ctx, cfg.Now().Add(-cfg.Retention))
		if cfg.OnPruned != nil && p.Total() > 0 {
			cfg.OnPruned(p)
		}
		switch {
		case err != nil && ctx.Err() == nil:
			log.WarnContext(ctx, "inbox pruning failed", "err", err)
		case p.Total() > 0:
			log.InfoContext(ctx, "inbox pruned", "done", p.Done, "ignored", p.Ignored, "dead", p.Dead, "retention", cfg.Retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
