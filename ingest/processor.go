package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/calsync/calsync/cluster"
	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
)

// ProcessorConfig configures a Processor. Zero fields take the defaults
// shown.
type ProcessorConfig struct {
	// Recall reads Recall's REST API; nil means no API key is configured, and
	// Recall deliveries wait (retrying) until one is.
	Recall RecallAPI
	// Workers is how many deliveries processed from their own body
	// (postpress) are processed at once (32). A worker spends most of a
	// delivery waiting for the group commit its Update rides in, so this
	// bounds how many deliveries one commit completes: with 8, processing
	// topped out near 8 per commit and fell behind 2,000 webhooks/s. While
	// intake is busy, three quarters of them wait (Intake).
	Workers int
	// RemoteWorkers is how many deliveries that wait on a provider's API
	// (Recall) are processed at once (16), by workers of their own: however
	// long Recall's rate limits or answers keep them, deliveries of other
	// providers never wait behind them. Recall allows about one event list
	// a second per workspace, and the listings of calendars that wait for
	// it together go out as one (recall.WithListMerging), so this is also
	// how many calendars one listing can answer.
	RemoteWorkers int
	// MaxQueuedBytes bounds the bytes of the deliveries held in memory,
	// queued or being processed (64 MiB); the rest wait in the inbox and are
	// read, in order, as room comes back. Postpress and Recall deliveries
	// each get half, so a backlog of one never keeps the other's deliveries
	// in the inbox. Half holds 32 deliveries of the default largest webhook
	// (1 MiB), enough to keep every worker busy, while thousands of
	// ordinary deliveries of a few KB stay under it.
	MaxQueuedBytes int64
	// MaxDeliveryBytes is the largest delivery body the inbox can hold (the
	// receiver's limit, 1 MiB): the inbox is read in pages small enough
	// that a page of the largest deliveries stays within MaxQueuedBytes.
	MaxDeliveryBytes int64
	// MaxAttempts is how many times a delivery is tried before it is
	// dead-lettered (12: with the default backoff, about an hour).
	MaxAttempts int
	// RetryBase and RetryMax bound the exponential backoff between attempts
	// (1s, 10m).
	RetryBase, RetryMax time.Duration
	// RescanInterval is how often the whole inbox is scanned for pending
	// deliveries, such as dead letters an operator put back (10s).
	RescanInterval time.Duration
	// ResyncInterval is how often every connected Recall calendar is fully
	// reconciled, catching webhooks that never arrived (6h; negative
	// disables).
	ResyncInterval time.Duration
	Logger         *slog.Logger
	Now            func() time.Time
	// Intake, if set, is the Receiver's: while webhooks queue for their
	// commit, all but a quarter of the workers wait (see [Intake]).
	Intake *Intake
	// MaxClockSkew is how far ahead of calsync's clock a provider's
	// updated_at may be (DefaultMaxClockSkew). A postpress
	// delivery beyond it is dead-lettered; a Recall event beyond it is
	// skipped until a sync finds it sane.
	MaxClockSkew time.Duration
	// OnProcessed, if set, is told the outcome of every attempt at a batch
	// of deliveries, for metrics: the provider, the outcome ("done" — the
	// batch is done or ignored —, "retry" or "dead"), how many deliveries
	// the batch held and how long the attempt took. It must not block.
	OnProcessed func(provider, outcome string, deliveries int, d time.Duration)

	// The settings below matter only for a store whose inbox several
	// processes share ([store.ClaimingInbox]): deliveries are then
	// processed by claiming their ordering keys (see claimSource).

	// Owner identifies this process in its claims (cluster.ReplicaID()).
	Owner string
	// ClaimTTL is how long a claim on a key lasts unless renewed, which
	// happens every third of it (DefaultClaimTTL).
	ClaimTTL time.Duration
	// ClaimPollInterval is how often keys are claimed besides at Notify
	// (DefaultClaimPollInterval).
	ClaimPollInterval time.Duration
	// WhileLeading, if set, runs the periodic Recall reconciliation
	// (ResyncInterval) only while this process leads the cluster, as
	// [cluster.Elector.WhileLeading] does; nil runs it always.
	WhileLeading func(ctx context.Context, fn func(context.Context))
}

// Processor works through the inbox: each delivery becomes normalized
// changes, applied in one transaction together with the delivery's
// completion, so a crash at any point neither loses nor doubles a change.
type Processor struct {
	store store.Store
	cfg   ProcessorConfig
	log   *slog.Logger
	sched *scheduler
	// src feeds sched and fences the writes: a scan of the inbox, or
	// claims on it when several processes share it.
	src  deliverySource
	wake chan struct{}
	// calendars holds ids of postpress calendars known to be stored.
	calendars knownIDs
}

// maxQueued bounds the deliveries held in memory, whatever their size, half
// for each lane (see also [ProcessorConfig.MaxQueuedBytes]); the rest wait
// in the inbox, which is what it is for.
const maxQueued = 10_000

// Defaults of [ProcessorConfig].
const (
	DefaultRemoteWorkers    = 16
	DefaultMaxQueuedBytes   = 64 << 20
	DefaultMaxDeliveryBytes = 1 << 20
)

// deliveryOverhead is what a delivery's fields other than its body may add
// to it, for sizing inbox reads (see [deliverySize]).
const deliveryOverhead = 4 << 10

// laneOf puts deliveries that wait on Recall's API in the remote lane.
func laneOf(d store.Delivery) lane {
	if d.Provider == model.ProviderRecall {
		return laneRemote
	}
	return laneLocal
}

// NewProcessor returns a Processor over st; Run starts it.
func NewProcessor(st store.Store, cfg ProcessorConfig) *Processor {
	if cfg.Workers <= 0 {
		cfg.Workers = 32
	}
	if cfg.RemoteWorkers <= 0 {
		cfg.RemoteWorkers = DefaultRemoteWorkers
	}
	if cfg.MaxQueuedBytes <= 0 {
		cfg.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if cfg.MaxDeliveryBytes <= 0 {
		cfg.MaxDeliveryBytes = DefaultMaxDeliveryBytes
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 12
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 10 * time.Minute
	}
	if cfg.RescanInterval <= 0 {
		cfg.RescanInterval = 10 * time.Second
	}
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = 6 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxClockSkew <= 0 {
		cfg.MaxClockSkew = DefaultMaxClockSkew
	}
	if cfg.OnProcessed == nil {
		cfg.OnProcessed = func(string, string, int, time.Duration) {}
	}
	if cfg.Owner == "" {
		cfg.Owner = cluster.ReplicaID()
	}
	if cfg.ClaimTTL <= 0 {
		cfg.ClaimTTL = DefaultClaimTTL
	}
	if cfg.ClaimPollInterval <= 0 {
		cfg.ClaimPollInterval = DefaultClaimPollInterval
	}
	if cfg.WhileLeading == nil {
		cfg.WhileLeading = func(ctx context.Context, fn func(context.Context)) { fn(ctx) }
	}
	p := &Processor{store: st, cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1)}
	p.sched = newScheduler(maxQueued, cfg.MaxQueuedBytes, laneOf, p.Notify)
	if ci, ok := st.(store.ClaimingInbox); ok {
		p.src = newClaimSource(p, ci)
	} else {
		p.src = scanSource{p}
	}
	return p
}

// Notify tells the processor a new delivery is in the inbox. It never
// blocks.
func (p *Processor) Notify() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run processes deliveries until ctx is done, then waits for the deliveries
// under way. A delivery interrupted by shutdown stays pending and is
// processed after the next start, or, on an inbox several processes
// share, by another process once this one's claim on it has expired (Run
// releases nothing on the way out, as a killed process could not).
func (p *Processor) Run(ctx context.Context) {
	go p.sched.closeOnDone(ctx)
	var wg sync.WaitGroup
	// A quarter of the workers (at least one) never give way to intake,
	// so processing goes on under any load.
	steady := max(1, p.cfg.Workers/4)
	for i := range p.cfg.Workers {
		wg.Go(func() { p.work(ctx, laneLocal, i >= steady) })
	}
	// Remote workers never give way to intake: they spend their time
	// waiting on the provider, not on the database.
	for range p.cfg.RemoteWorkers {
		wg.Go(func() { p.work(ctx, laneRemote, false) })
	}
	wg.Go(func() { p.src.run(ctx) })
	if p.cfg.ResyncInterval > 0 && p.cfg.Recall != nil {
		wg.Go(func() { p.cfg.WhileLeading(ctx, p.reconcile) })
	}
	wg.Wait()
	p.src.stop()
}

// dispatch moves pending deliveries from the inbox to the scheduler: new
// ones as they are notified, and now and then from the start of the inbox,
// for deliveries put back behind the scan's position (a dead letter an
// operator retried).
func (p *Processor) dispatch(ctx context.Context) {
	rescan := time.NewTicker(p.cfg.RescanInterval)
	defer rescan.Stop()
	var after [numLanes]int64
	fromStart := false
	for {
		var more bool
		after, more = p.scan(ctx, after, fromStart)
		fromStart = false
		if more {
			p.Notify() // go on after whatever else is waiting
		}
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-rescan.C:
			fromStart = true
		}
	}
}

// maxScanRows bounds the deliveries one scan reads, so that a lane walking
// past another lane's backlog (see scan) reads it a part at a time.
const maxScanRows = 5000

// scan queues pending deliveries, as many as the scheduler has room for,
// and returns where each lane continues: after[l] is the id up to which
// lane l has looked at the inbox. Each read starts at the earliest position
// of a lane with room and asks for no more deliveries than fit even at the
// largest size, so what is read never exceeds the scheduler's bound
// either. A lane without room leaves its deliveries in the inbox and its
// position where it was, while the other lanes go on past them; it
// continues from there when the scheduler signals room (Notify). fromStart
// reads from the start of the inbox instead, without moving any lane back.
// more says the scan stopped after maxScanRows with lanes still open.
func (p *Processor) scan(ctx context.Context, after [numLanes]int64, fromStart bool) ([numLanes]int64, bool) {
	const page = 500
	pos := after
	if fromStart {
		pos = [numLanes]int64{}
	}
	// done merges the positions reached into after: a scan from the start
	// never moves a lane back.
	done := func(more bool) ([numLanes]int64, bool) {
		for l := range after {
			after[l] = max(after[l], pos[l])
		}
		return after, more
	}
	for read := 0; ; {
		limit, open := p.sched.room(p.cfg.MaxDeliveryBytes+deliveryOverhead, page)
		from, any := int64(math.MaxInt64), false
		for l, o := range open {
			if o {
				from, any = min(from, pos[l]), true
			}
		}
		if !any {
			return done(false)
		}
		if read >= maxScanRows {
			return done(true)
		}
		ds, err := p.store.PendingDeliveries(ctx, from, limit)
		if err != nil {
			if ctx.Err() == nil {
				p.log.Error("read pending deliveries", "err", err)
			}
			return done(false)
		}
		read += len(ds)
		through := p.sched.addAll(ds, p.cfg.Now(), &open)
		for l, n := range through {
			// A lane ahead of from has seen the deliveries up to its
			// position already.
			if n > 0 {
				pos[l] = max(pos[l], ds[n-1].ID)
			}
		}
		if len(ds) < limit {
			return done(false)
		}
	}
}

// work processes deliveries of lane l until the scheduler closes. A worker that
// yields waits, between deliveries, while intake is busy.
func (p *Processor) work(ctx context.Context, l lane, yields bool) {
	for {
		if yields && !p.cfg.Intake.waitQuiet(ctx) {
			return
		}
		key, batch, ok := p.sched.next(l, coalesces)
		if !ok {
			return
		}
		began := time.Now()
		bctx := p.src.begin(ctx, key)
		// A fetch grows the batch with the hints that arrive while it
		// waits its turn at the provider's rate limit.
		grow := func(coalesce func(head, d store.Delivery) bool) []store.Delivery {
			batch = append(batch, p.sched.join(key, coalesce)...)
			return batch
		}
		err := p.process(bctx, batch, grow)
		switch {
		case err == nil:
			// Reported before the scheduler lets go of the batch, so that
			// whoever sees it gone sees it counted.
			p.cfg.OnProcessed(batch[0].Provider, "done", len(batch), time.Since(began))
			p.src.finished(bctx, key, len(batch))
		case ctx.Err() != nil:
			return // shutting down: the deliveries stay pending
		default:
			if outcome := p.failed(bctx, key, batch, err); outcome != "" {
				p.cfg.OnProcessed(batch[0].Provider, outcome, len(batch), time.Since(began))
			}
		}
	}
}

// growFunc adds to a batch in flight (see process).
type growFunc func(coalesce func(head, d store.Delivery) bool) []store.Delivery

// permanentError marks a failure that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return permanentError{err} }

// failed dead-letters a batch whose failure is permanent or that ran out of
// attempts, and otherwise schedules its retry. It returns the outcome for
// [ProcessorConfig.OnProcessed]: "dead" or "retry", or "" when another
// process took the batch's key over (its writes were fenced off), which
// is no outcome of this process's.
func (p *Processor) failed(ctx context.Context, key string, batch []store.Delivery, cause error) string {
	head := batch[0]
	if errors.Is(cause, store.ErrLeaseLost) {
		p.src.lost(ctx, key)
		return ""
	}
	attempts := head.Attempts + 1
	var perm permanentError
	// The store refusing an object is final too: the same delivery would
	// build the same object again.
	refused := errors.As(cause, &perm) || errors.Is(cause, store.ErrInvalidArgument)
	if refused || attempts >= p.cfg.MaxAttempts {
		reason := cause.Error()
		if !refused {
			reason = fmt.Sprintf("gave up after %d attempts: %v", attempts, cause)
		}
		err := p.src.update(ctx, func(tx store.Tx) error {
			for _, d := range batch {
				if err := tx.FinishDelivery(ctx, d.ID, calsyncv1.DeliveryState_DELIVERY_STATE_DEAD, reason); err != nil {
					return err
				}
			}
			return nil
		})
		if errors.Is(err, store.ErrLeaseLost) {
			p.src.lost(ctx, key)
			return ""
		}
		if err != nil {
			p.log.Error("dead-letter delivery", "delivery_id", head.ID, "err", err)
			p.sched.retryAfter(key, head.Attempts, p.cfg.RetryBase)
			return "retry"
		}
		p.log.Warn("delivery dead-lettered", "delivery_id", head.ID, "provider", head.Provider, "event_type", head.EventType, "reason", store.TruncateNote(reason))
		p.src.finished(ctx, key, len(batch))
		return "dead"
	}
	wait := p.backoff(attempts)
	p.log.Info("delivery will be retried", "delivery_id", head.ID, "attempt", attempts, "retry_in", wait, "err", store.TruncateNote(cause.Error()))
	p.src.retryLater(ctx, key, head, attempts, cause, wait)
	return "retry"
}

// backoff is the wait before attempt n+1: exponential from RetryBase, capped
// at RetryMax, with ±20% jitter so retries of many deliveries spread out.
func (p *Processor) backoff(attempts int) time.Duration {
	d := p.cfg.RetryBase
	for i := 1; i < attempts && d < p.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, p.cfg.RetryMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// process handles one batch: a single delivery, or Recall sync hints for
// one calendar coalesced into one fetch. grow adds to the batch the
// deliveries of its key queued since, as far as they coalesce, and returns
// the whole batch; whatever process reports then holds for all of it.
func (p *Processor) process(ctx context.Context, batch []store.Delivery, grow growFunc) error {
	switch head := batch[0]; head.Provider {
	case model.ProviderPostpress:
		return p.processPostpress(ctx, head)
	case model.ProviderRecall:
		return p.processRecall(ctx, batch, grow)
	default:
		return permanent(fmt.Errorf("unknown provider %q", head.Provider))
	}
}

// finish records the outcome of deliveries that produced no changes.
func (p *Processor) finish(ctx context.Context, state calsyncv1.DeliveryState, note string, batch ...store.Delivery) error {
	return p.src.update(ctx, func(tx store.Tx) error {
		return finishAll(ctx, tx, state, note, batch)
	})
}

func finishAll(ctx context.Context, tx store.Tx, state calsyncv1.DeliveryState, note string, batch []store.Delivery) error {
	for _, d := range batch {
		if err := tx.FinishDelivery(ctx, d.ID, state, note); err != nil {
			return err
		}
	}
	return nil
}

// Pending is how many deliveries the processor holds queued or in flight.
func (p *Processor) Pending() int { return p.sched.pending() }

// QueuedBytes is the size of the deliveries the processor holds queued or in
// flight: at most [ProcessorConfig.MaxQueuedBytes], unless a single delivery
// is larger.
func (p *Processor) QueuedBytes() int64 { return p.sched.queuedBytes() }
