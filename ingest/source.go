package ingest

import (
	"context"
	"time"

	"github.com/calsync/calsync/store"
)

// deliverySource is where the processor's deliveries come from and what
// working on them involves. [scanSource] reads the whole inbox, for a
// database one process owns (SQLite); [claimSource] claims ordering keys
// in an inbox several processes share ([store.ClaimingInbox]), so that
// each delivery is processed by one of them.
//
// A worker that takes a batch of a key calls begin, makes every write of
// the batch through update with begin's context, and then tells the
// source how the batch ended: finished, retryLater or lost.
type deliverySource interface {
	// run feeds the scheduler until ctx is done.
	run(ctx context.Context)
	// begin returns the context a batch of key is processed under: its
	// writes are fenced by what the source holds of key now.
	begin(ctx context.Context, key string) context.Context
	// update runs fn in one write transaction, which commits only if the
	// source still holds the batch's key (begin's ctx); otherwise it
	// fails with an error wrapping store.ErrLeaseLost.
	update(ctx context.Context, fn func(tx store.Tx) error) error
	// finished says the first n deliveries of key are finished in the
	// store.
	finished(ctx context.Context, key string, n int)
	// retryLater says the head of key failed with cause, after attempts
	// attempts, and is to be tried again after wait.
	retryLater(ctx context.Context, key string, head store.Delivery, attempts int, cause error, wait time.Duration)
	// lost says the batch's writes were refused because another process
	// took key over: this one stops working on it.
	lost(ctx context.Context, key string)
	// stop is called once, after every worker and run have returned, on
	// a clean shutdown: the source gives back what it holds.
	stop()
}

// scanSource reads pending deliveries from the whole inbox, as one process
// that owns the database does: nothing to claim, nothing to fence.
type scanSource struct{ p *Processor }

func (s scanSource) run(ctx context.Context) { s.p.dispatch(ctx) }

func (s scanSource) begin(ctx context.Context, _ string) context.Context { return ctx }

func (s scanSource) update(ctx context.Context, fn func(tx store.Tx) error) error {
	return s.p.store.Update(ctx, fn)
}

func (s scanSource) finished(_ context.Context, key string, n int) { s.p.sched.finish(key, n) }

func (s scanSource) retryLater(ctx context.Context, key string, head store.Delivery, attempts int, cause error, wait time.Duration) {
	if err := s.p.store.RecordAttempt(ctx, head.ID, cause.Error(), s.p.cfg.Now().Add(wait)); err != nil {
		s.p.log.Error("record delivery attempt", "delivery_id", head.ID, "err", err)
	}
	s.p.sched.retryAfter(key, attempts, wait)
}

// lost cannot happen without claims; were it to, the next rescan would
// find the key's deliveries again.
func (s scanSource) lost(_ context.Context, key string) { s.p.sched.drop(key) }

func (s scanSource) stop() {}
