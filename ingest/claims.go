package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/calsync/calsync/store"
)

// Defaults of [ProcessorConfig] for an inbox several processes share.
const (
	// DefaultClaimTTL is how long a claim on a key lasts unless renewed
	// (every third of it): a process that dies holding keys has them
	// taken over within about this long plus a poll interval.
	DefaultClaimTTL = 10 * time.Second
	// DefaultClaimPollInterval is how often the inbox is asked for keys
	// due and unclaimed, besides at once when this process stores a
	// delivery.
	DefaultClaimPollInterval = time.Second
)

// maxClaimBatch bounds the keys one ClaimPending call asks for.
const maxClaimBatch = 500

// claimsPerWorker is how many keys a lane asks to hold claimed, per worker
// of the lane: enough to keep every worker busy, few enough that keys this
// process cannot start soon stay free for the others. It shapes how many
// keys a claim round asks for, not what it keeps: ClaimPending cannot tell
// one lane's keys from another's, so a round keeps every key whose
// deliveries fit in the scheduler (giving back the others would claim
// them again at every round, and starve the keys behind them), and a lane
// can hold more keys than this while another lane has room.
const claimsPerWorker = 4

// renewConcurrency is how many claims are renewed at once, so that
// renewing many keys takes a small part of the TTL.
const renewConcurrency = 8

// claimSource gets deliveries by claiming whole ordering keys (calendars)
// from an inbox several processes share ([store.ClaimingInbox]), so that
// each key's deliveries are processed by one process at a time, in order.
//
// A key's life here: claimed (run, when notified and every poll interval)
// → its deliveries read into the scheduler → processed, every write fenced
// by the claim → once the scheduler holds nothing of the key, read again
// for deliveries stored meanwhile → released when there are none. A
// delivery that fails has its attempt recorded and its key released: the
// recorded next attempt time keeps the key from being claimed before its
// retry is due, by any process. The claims held are renewed every third of
// the TTL; a claim found lost (this process stalled past its TTL and
// another took the key) is dropped from memory, and whatever was in flight
// under it fails its fencing. A clean shutdown releases every claim once
// the workers have returned, so other processes take the keys over at
// once (a rolling deploy does not hold calendars back for a TTL); a
// process killed releases nothing, and its claims expire.
type claimSource struct {
	p     *Processor
	inbox store.ClaimingInbox
	owner string
	ttl   time.Duration
	poll  time.Duration

	mu   sync.Mutex
	held map[string]*heldClaim // by scheduler key
	// overflow is how many keys the last claim round gave back for lack
	// of room: the next round asks for that many more, so that keys of a
	// lane with room are reached past the oldest keys of a full lane.
	overflow int
}

// heldClaim is a claim this process works under. Its fields are guarded
// by claimSource.mu.
type heldClaim struct {
	claim store.Claim
	lane  lane
	// lost says a renewal found the claim taken over.
	lost bool
}

func newClaimSource(p *Processor, inbox store.ClaimingInbox) *claimSource {
	return &claimSource{p: p, inbox: inbox, owner: p.cfg.Owner, ttl: p.cfg.ClaimTTL, poll: p.cfg.ClaimPollInterval,
		held: map[string]*heldClaim{}}
}

// claimKey is the scheduler key of a claim's deliveries (see orderingKey).
func claimKey(c store.Claim) string {
	return orderingKey(store.Delivery{ID: c.DeliveryID, OrderingKey: c.OrderingKey})
}

func (c *claimSource) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { c.renew(ctx) })
	poll := time.NewTicker(c.poll)
	defer poll.Stop()
	for {
		if c.claim(ctx) {
			c.p.Notify() // go on after whatever else is waiting
		}
		select {
		case <-ctx.Done():
			return
		case <-c.p.wake:
		case <-poll.C:
		}
	}
}

// claim runs one claim round: it claims as many keys as the lanes have
// room for and reads their deliveries into the scheduler. It reports
// whether more keys may be due at once (the round was full).
func (c *claimSource) claim(ctx context.Context) bool {
	limit := c.wanted()
	if limit == 0 {
		return false
	}
	// The claim runs to its end even when ctx ends meanwhile: a statement
	// the client abandons can still commit in the database, and its
	// claims would then be held by this process without its knowing, so
	// neither it nor any other process would work on those keys until
	// their TTL ran out. Claims granted after ctx ended are given back.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	claims, err := c.inbox.ClaimPending(cctx, c.owner, c.ttl, limit)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			c.p.log.Error("claim pending deliveries", "err", err)
		}
		return false
	}
	if ctx.Err() != nil {
		for _, cl := range claims {
			c.release(ctx, cl.Lease)
		}
		return false
	}
	kept, gaveBack := 0, 0
	for _, cl := range claims {
		if c.take(ctx, cl) {
			kept++
		} else {
			gaveBack++
		}
	}
	c.mu.Lock()
	c.overflow = gaveBack
	c.mu.Unlock()
	return len(claims) == limit && kept > 0
}

// wanted is how many keys the next claim round asks for: what the lanes
// with room may still hold, plus the last round's overflow.
func (c *claimSource) wanted() int {
	_, open := c.p.sched.room(c.p.cfg.MaxDeliveryBytes+deliveryOverhead, maxClaimBatch)
	caps := [numLanes]int{laneLocal: claimsPerWorker * c.p.cfg.Workers, laneRemote: claimsPerWorker * c.p.cfg.RemoteWorkers}
	c.mu.Lock()
	defer c.mu.Unlock()
	var held [numLanes]int
	for _, h := range c.held {
		held[h.lane]++
	}
	free := 0
	for l, o := range open {
		if o {
			free += max(0, caps[l]-held[l])
		}
	}
	if free == 0 {
		return 0
	}
	return min(maxClaimBatch, free+c.overflow)
}

// take starts work on a new claim: it reads the key's deliveries into
// the scheduler, or gives the claim back when they do not fit (or there
// are none left). It reports whether it kept the claim.
func (c *claimSource) take(ctx context.Context, cl store.Claim) bool {
	key := claimKey(cl)
	h := &heldClaim{claim: cl}
	c.mu.Lock()
	_, working := c.held[key]
	if !working {
		c.held[key] = h
	}
	c.mu.Unlock()
	if working {
		// This process still works on key under an older claim, which
		// lapsed (its renewals failed for a whole TTL). The new claim is
		// given back: the work under the old one fails its fencing, drops
		// the key, and a later round claims it afresh.
		c.release(ctx, cl.Lease)
		return false
	}
	if c.read(ctx, key, h) {
		return true
	}
	c.forget(key, h)
	c.release(ctx, cl.Lease)
	return false
}

// read queues the PENDING deliveries h covers, in pages, as many as the
// scheduler has room for, and reports whether the scheduler now holds some
// of key. Those it has no room for stay in the inbox: they are read when
// the scheduler has worked through the key (see finished).
func (c *claimSource) read(ctx context.Context, key string, h *heldClaim) bool {
	var after int64
	for {
		limit, open := c.p.sched.room(c.p.cfg.MaxDeliveryBytes+deliveryOverhead, maxClaimBatch)
		if limit == 0 {
			break
		}
		ds, err := c.inbox.ClaimedDeliveries(ctx, c.claimOf(h), after, limit)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, store.ErrLeaseLost) {
				c.p.log.Error("read claimed deliveries", "err", err)
			}
			break
		}
		if len(ds) == 0 {
			break
		}
		// One key's deliveries are one calendar's, of one provider: one
		// lane.
		l := laneOf(ds[0])
		c.mu.Lock()
		h.lane = l
		c.mu.Unlock()
		through := c.p.sched.addAll(ds, c.p.cfg.Now(), &open)
		if len(ds) < limit || through[l] < len(ds) {
			break // all read, or the lane is full
		}
		after = ds[len(ds)-1].ID
	}
	return c.p.sched.holds(key)
}

// claimCtxKey is the context key of the claim a batch is processed
// under.
type claimCtxKey struct{}

func (c *claimSource) begin(ctx context.Context, key string) context.Context {
	c.mu.Lock()
	h := c.held[key]
	c.mu.Unlock()
	return context.WithValue(ctx, claimCtxKey{}, h)
}

// heldOf returns the claim begin found for the batch (nil if none).
func heldOf(ctx context.Context) *heldClaim {
	h, _ := ctx.Value(claimCtxKey{}).(*heldClaim)
	return h
}

func (c *claimSource) claimOf(h *heldClaim) store.Claim {
	c.mu.Lock()
	defer c.mu.Unlock()
	return h.claim
}

// update checks, first thing in the transaction, that the batch's claim
// still holds: a process that stalled past its claim's TTL while another
// took the key over cannot commit anything for it, and the check keeps
// the key from being taken over until the transaction ends.
func (c *claimSource) update(ctx context.Context, fn func(tx store.Tx) error) error {
	h := heldOf(ctx)
	if h == nil {
		return fmt.Errorf("ingest: no claim on the deliveries: %w", store.ErrLeaseLost)
	}
	lease := c.claimOf(h).Lease
	return c.p.store.Update(ctx, func(tx store.Tx) error {
		ltx, ok := tx.(store.LeaseTx)
		if !ok {
			return errors.New("ingest: the store claims deliveries but its transactions cannot check leases")
		}
		if err := ltx.CheckLease(ctx, lease); err != nil {
			return err
		}
		return fn(tx)
	})
}

func (c *claimSource) finished(ctx context.Context, key string, n int) {
	if !c.p.sched.finish(key, n) {
		return
	}
	h := heldOf(ctx)
	if h == nil {
		return
	}
	c.mu.Lock()
	lost := h.lost
	c.mu.Unlock()
	// Deliveries stored for the key since it was read (hints that arrived
	// during a fetch, say) are processed under the same claim.
	if !lost && c.read(ctx, key, h) {
		return
	}
	c.forget(key, h)
	if !lost {
		c.release(ctx, c.claimOf(h).Lease)
	}
}

func (c *claimSource) retryLater(ctx context.Context, key string, head store.Delivery, attempts int, cause error, wait time.Duration) {
	c.p.sched.drop(key)
	h := heldOf(ctx)
	if h == nil {
		return
	}
	c.forget(key, h)
	// The attempt is recorded only while the claim holds, so that a
	// process that lost the key does not push back the new holder's work.
	// The check and the write are two calls: a claim lost between them
	// costs the new holder one postponed attempt, never a doubled change.
	lease, err := c.inbox.RenewLease(ctx, c.claimOf(h).Lease, c.ttl)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, store.ErrLeaseLost) {
			c.p.log.Error("renew claim before recording an attempt", "delivery_id", head.ID, "err", err)
		}
		return
	}
	if err := c.inbox.RecordAttempt(ctx, head.ID, cause.Error(), c.p.cfg.Now().Add(wait)); err != nil {
		// Without the recorded attempt the key would be due at once: the
		// claim is left to expire instead, which spaces the retry by a TTL.
		c.p.log.Error("record delivery attempt", "delivery_id", head.ID, "err", err)
		return
	}
	c.release(ctx, lease)
}

func (c *claimSource) lost(ctx context.Context, key string) {
	c.p.sched.drop(key)
	c.forget(key, heldOf(ctx))
	c.p.log.Info("claim on deliveries lost; another process took them over", "ordering_key", key)
}

// renew renews the claims held every third of the TTL until ctx is done.
// A claim found lost has its key's queued deliveries dropped from memory
// at once; a batch a worker holds is dropped when its fenced write fails.
func (c *claimSource) renew(ctx context.Context) {
	t := time.NewTicker(max(c.ttl/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		held := make(map[string]*heldClaim, len(c.held))
		for k, h := range c.held {
			if !h.lost {
				held[k] = h
			}
		}
		c.mu.Unlock()
		var wg sync.WaitGroup
		turns := make(chan struct{}, renewConcurrency)
		for key, h := range held {
			turns <- struct{}{}
			wg.Go(func() {
				defer func() { <-turns }()
				c.renewOne(ctx, key, h)
			})
		}
		wg.Wait()
	}
}

// renewOne renews one claim, and drops its key when the claim was lost.
func (c *claimSource) renewOne(ctx context.Context, key string, h *heldClaim) {
	l, err := c.inbox.RenewLease(ctx, c.claimOf(h).Lease, c.ttl)
	switch {
	case err == nil:
		c.mu.Lock()
		h.claim.Lease = l
		c.mu.Unlock()
	case errors.Is(err, store.ErrLeaseLost):
		c.mu.Lock()
		h.lost = true
		c.mu.Unlock()
		c.p.log.Warn("claim on deliveries lost; another process took them over", "ordering_key", key)
		if c.p.sched.dropQueued(key) {
			c.forget(key, h)
		}
	case ctx.Err() == nil:
		c.p.log.Warn("renew claim on deliveries", "ordering_key", key, "err", err)
	}
}

// forget stops tracking h, unless key is held under another claim by
// then.
func (c *claimSource) forget(key string, h *heldClaim) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h != nil && c.held[key] == h {
		delete(c.held, key)
	}
}

// releaseTimeout bounds how long a clean shutdown spends giving its claims
// back; what it cannot release expires.
const releaseTimeout = 5 * time.Second

// stop releases every claim held, after the workers returned: their
// deliveries are PENDING again for any process to claim now.
func (c *claimSource) stop() {
	c.mu.Lock()
	var leases []store.Lease
	for _, h := range c.held {
		if !h.lost {
			leases = append(leases, h.claim.Lease)
		}
	}
	c.held = map[string]*heldClaim{}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	for _, l := range leases {
		c.release(ctx, l)
	}
}

// release gives a claim up so the key's next deliveries can be claimed at
// once, by any process. It runs even when ctx has already ended (a
// processor stopping gives back what it claimed), within releaseTimeout.
// A failure is only logged: the claim then expires.
func (c *claimSource) release(ctx context.Context, l store.Lease) {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
	}
	if err := c.inbox.ReleaseLease(ctx, l); err != nil {
		c.p.log.Warn("release claim on deliveries", "lease", l.Name, "err", err)
	}
}
