// Package cluster says who this replica is and whether it leads: several
// calsync processes sharing one database elect one of them, through a
// lease in that database, to run the work that must happen once per
// cluster (Recall reconciliation, change-log compaction, inbox pruning,
// inbox statistics).
//
// A store that one process owns (SQLite) has no leases: that process
// always leads.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/calsync/calsync/store"
)

// Defaults of [ElectorConfig].
const (
	// DefaultLeaderLease is the name of the leader's lease.
	DefaultLeaderLease = "leader"
	// DefaultLeaseTTL is how long a lease lasts unless renewed. A replica
	// that dies holding one is replaced within about TTL plus a renewal
	// interval.
	DefaultLeaseTTL = 10 * time.Second
)

// ReplicaID returns this process's identity as a lease owner:
// hostname-pid-random, made once per process, so two processes never
// share one even on one host or after a pid is reused.
var ReplicaID = sync.OnceValue(func() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
})

// ElectorConfig configures an [Elector]. Zero fields take the defaults
// shown.
type ElectorConfig struct {
	// Lease is the lease's name (DefaultLeaderLease).
	Lease string
	// Owner is this replica's identity (ReplicaID()).
	Owner string
	// TTL is the lease's time to live (DefaultLeaseTTL).
	TTL time.Duration
	// RenewInterval is how often the leader renews its lease and a
	// follower tries to take it (TTL/3).
	RenewInterval time.Duration
	// Logger receives leadership changes and lease errors (discarded if
	// nil).
	Logger *slog.Logger
	// OnChange, if set, is called with every change of leadership, one
	// call at a time, leading first true (metrics). It must not block.
	OnChange func(leading bool)
}

// Elector elects one leader among the replicas sharing a database. Run
// keeps the election going; Leading and WhileLeading are safe to call
// from any goroutine.
//
// What a caller can rely on: while a replica's Leading reports true, its
// lease was renewed less than TTL ago by its own clock, counted from
// before the renewal was sent, so no other replica holds the lease at
// that moment (clocks running at the same rate). Leadership is not a
// fence: work a leader started may still be finishing when another
// replica takes over, so the singletons it runs must tolerate a short
// overlap (they all do: each is idempotent).
type Elector struct {
	leaser store.Leaser // nil: this process always leads
	cfg    ElectorConfig
	log    *slog.Logger

	mu      sync.Mutex
	leading bool
	// changed is closed and replaced at every change of leading.
	changed chan struct{}
}

// NewElector returns an elector over st's leases, or one that always
// leads if st does not implement [store.Leaser].
func NewElector(st any, cfg ElectorConfig) *Elector {
	if cfg.Lease == "" {
		cfg.Lease = DefaultLeaderLease
	}
	if cfg.Owner == "" {
		cfg.Owner = ReplicaID()
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultLeaseTTL
	}
	if cfg.RenewInterval <= 0 {
		cfg.RenewInterval = max(cfg.TTL/3, time.Millisecond)
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func(bool) {}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Elector{cfg: cfg, log: log, changed: make(chan struct{})}
	if l, ok := st.(store.Leaser); ok {
		e.leaser = l
	} else {
		// Leading from the start, not from Run, so no caller ever sees
		// a single process as a follower.
		e.leading = true
	}
	return e
}

// Owner is the identity this elector holds the lease under.
func (e *Elector) Owner() string { return e.cfg.Owner }

// Leading reports whether this replica leads now.
func (e *Elector) Leading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading
}

// state returns whether this replica leads and a channel closed at the
// next change.
func (e *Elector) state() (bool, <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading, e.changed
}

func (e *Elector) set(leading bool) {
	e.mu.Lock()
	if e.leading == leading {
		e.mu.Unlock()
		return
	}
	e.leading = leading
	close(e.changed)
	e.changed = make(chan struct{})
	// OnChange is called under the lock so that calls never overlap or
	// arrive out of order.
	e.cfg.OnChange(leading)
	e.mu.Unlock()
	if leading {
		e.log.Info("leading the cluster", "owner", e.cfg.Owner)
	} else {
		e.log.Info("no longer leading the cluster", "owner", e.cfg.Owner)
	}
}

// Run takes part in the election until ctx is done. On a store without
// leases the elector leads from its creation until Run's ctx is done.
// When ctx ends while it leads, it gives the lease up, so another replica takes over without
// waiting for it to expire; a replica that is killed cannot, and is
// replaced once its lease expires.
func (e *Elector) Run(ctx context.Context) {
	if e.leaser == nil {
		<-ctx.Done()
		e.set(false)
		return
	}
	var (
		lease store.Lease
		held  bool
		// until is when this replica's leadership ends unless renewed:
		// TTL after the last successful call was sent, by the local
		// monotonic clock.
		until time.Time
	)
	t := time.NewTicker(e.cfg.RenewInterval)
	defer t.Stop()
	for {
		sent := time.Now()
		if held && !sent.Before(until) {
			// The lease may have expired: stop leading before asking, since
			// the answer may be slow to come.
			held = false
			e.set(false)
		}
		// No call outlasts a renewal interval, so a hung database cannot
		// keep this replica leading past its lease.
		callCtx, cancel := context.WithTimeout(ctx, e.cfg.RenewInterval)
		var err error
		if held {
			var renewed store.Lease
			renewed, err = e.leaser.RenewLease(callCtx, lease, e.cfg.TTL)
			switch {
			case err == nil:
				lease, until = renewed, sent.Add(e.cfg.TTL)
			case errors.Is(err, store.ErrLeaseLost):
				held = false
			}
		} else {
			var got store.Lease
			var ok bool
			got, ok, err = e.leaser.AcquireLease(callCtx, e.cfg.Lease, e.cfg.Owner, e.cfg.TTL)
			if err == nil && ok {
				lease, held, until = got, true, sent.Add(e.cfg.TTL)
			}
		}
		cancel()
		if err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrLeaseLost) {
			e.log.Warn("leader lease", "err", err)
		}
		// A renewal that failed for another reason (the database is
		// unreachable) keeps leadership until the lease would expire: the
		// others cannot take it before then either.
		if held && !time.Now().Before(until) {
			held = false
		}
		e.set(held)
		// A leader whose renewals fail steps down the moment its lease
		// may have expired, not at its next tick.
		expiry := time.NewTimer(time.Until(until))
		if !held {
			expiry.Stop()
		}
		select {
		case <-expiry.C:
		case <-ctx.Done():
			expiry.Stop()
			e.set(false)
			if held {
				release, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.RenewInterval)
				if err := e.leaser.ReleaseLease(release, lease); err != nil {
					e.log.Warn("release leader lease", "err", err)
				}
				cancel()
			}
			return
		case <-t.C:
			expiry.Stop()
		}
	}
}

// WhileLeading runs fn whenever this replica leads, until ctx is done:
// fn's context is canceled as soon as leadership is lost (or ctx ends),
// and fn is started again, with a new context, when leadership comes
// back. It returns once ctx is done and fn has returned. fn should return
// soon after its context is canceled.
func (e *Elector) WhileLeading(ctx context.Context, fn func(ctx context.Context)) {
	for {
		leading, changed := e.state()
		if !leading {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				continue
			}
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			fn(runCtx)
		}()
		// Leadership may flap while fn runs; only a state of not leading
		// stops it.
		for leading {
			select {
			case <-ctx.Done():
				leading = false
			case <-changed:
				leading, changed = e.state()
			}
		}
		cancel()
		<-done
		if ctx.Err() != nil {
			return
		}
	}
}
