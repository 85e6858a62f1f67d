package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calsync/calsync/store"
)

// Cases for the contract several processes share: leases ([store.Leaser],
// [store.LeaseTx]), inbox claims ([store.ClaimingInbox]) and the shared
// rate limiter ([store.RateLimiter]). They run from [RunShared], since
// they need several instances on one database. A backend one process owns
// (SQLite) implements none of these interfaces: each case then logs that
// there is nothing to check and returns.

// leaseTTL is the short lease of the cases that wait for an expiry.
const leaseTTL = 300 * time.Millisecond

// waitLimit bounds every wait for a condition.
const waitLimit = 10 * time.Second

func init() {
	sharedCases = append(sharedCases,
		testCase{"LeaseExclusiveAcrossInstances", testLeaseExclusive},
		testCase{"LeaseExpires", testLeaseExpires},
		testCase{"LeaseRenewAndTakeover", testLeaseRenewAndTakeover},
		testCase{"LeaseReleaseFreesAtOnce", testLeaseRelease},
		testCase{"LeaseTokensGrowAcrossOwners", testLeaseTokensGrow},
		testCase{"ClaimsDisjointAcrossInstances", testClaimsDisjoint},
		testCase{"ClaimsOldestDueFirst", testClaimsOrderAndDue},
		testCase{"ClaimedDeliveriesPage", testClaimedDeliveries},
		testCase{"ClaimExpiresAndMoves", testClaimExpires},
		testCase{"StalledClaimantCannotCommit", testStalledClaimant},
		testCase{"CheckedLeaseHoldsUntilCommit", testCheckedLeaseHolds},
		testCase{"CheckedClaimHoldsUntilCommit", testCheckedClaimHolds},
		testCase{"LostLeaseLeavesBatchAlone", testLostLeaseInBatch},
		testCase{"RateLimiterBurstThenWait", testRateBurst},
		testCase{"RateLimiterSharedAcrossInstances", testRateShared},
	)
}

// claimingInstances returns n ClaimingInbox instances on the case's
// database, the harness's first, or nil when the backend has none.
func claimingInstances(t *testing.T, h *harness, n int) []store.ClaimingInbox {
	t.Helper()
	first, ok := h.s.(store.ClaimingInbox)
	if !ok {
		t.Logf("%T is not a store.ClaimingInbox: one process owns it and holds every lease", h.s)
		return nil
	}
	if _, ok := h.s.(store.Leaser); !ok {
		t.Fatalf("%T is a ClaimingInbox but not a Leaser", h.s)
	}
	out := []store.ClaimingInbox{first}
	for range n - 1 {
		c, ok := h.openAnother().(store.ClaimingInbox)
		if !ok {
			t.Fatal("another instance of a ClaimingInbox is not one")
		}
		out = append(out, c)
	}
	return out
}

// rateLimiters returns n RateLimiter instances on the case's database, or
// nil when the backend has none.
func rateLimiters(t *testing.T, h *harness, n int) []store.RateLimiter {
	t.Helper()
	first, ok := h.s.(store.RateLimiter)
	if !ok {
		t.Logf("%T is not a store.RateLimiter: one process owns it and keeps its limits in memory", h.s)
		return nil
	}
	out := []store.RateLimiter{first}
	for range n - 1 {
		r, ok := h.openAnother().(store.RateLimiter)
		if !ok {
			t.Fatal("another instance of a RateLimiter is not one")
		}
		out = append(out, r)
	}
	return out
}

// asStore returns the Store behind a ClaimingInbox instance.
func asStore(t *testing.T, c store.ClaimingInbox) store.Store {
	t.Helper()
	s, ok := c.(store.Store)
	if !ok {
		t.Fatalf("%T is not a store.Store", c)
	}
	return s
}

func mustAcquire(t *testing.T, l store.Leaser, name, owner string, ttl time.Duration) (store.Lease, bool) {
	t.Helper()
	got, held, err := l.AcquireLease(context.Background(), name, owner, ttl)
	must(t, fmt.Sprintf("AcquireLease(%s, %s)", name, owner), err)
	return got, held
}

// acquireWhenFree polls AcquireLease until owner holds the lease.
func acquireWhenFree(t *testing.T, l store.Leaser, name, owner string, ttl time.Duration) store.Lease {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		got, held := mustAcquire(t, l, name, owner, ttl)
		if held {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not get lease %s within %v; it is %+v", owner, name, waitLimit, got)
		}
	}
}

// waitExpired returns once every lease taken with ttl before the call has
// expired by the database's clock: a probe lease taken now with the same
// ttl is polled until another owner can take it over.
func waitExpired(t *testing.T, l store.Leaser, ttl time.Duration) {
	t.Helper()
	name := fmt.Sprintf("probe-%d", time.Now().UnixNano())
	if _, held := mustAcquire(t, l, name, "probe-a", ttl); !held {
		t.Fatalf("a fresh probe lease %s is held by someone", name)
	}
	acquireWhenFree(t, l, name, "probe-b", ttl)
}

// claimDelivery is a delivery of ordering key key, due at once.
func claimDelivery(key, dedup string) store.NewDelivery {
	d := delivery("recall", dedup)
	d.OrderingKey = key
	d.ReceiveTime = time.Time{}
	return d
}

// claimWhat names what a claim covers, for comparisons.
func claimWhat(c store.Claim) string {
	if c.OrderingKey == "" {
		return fmt.Sprintf("delivery %d", c.DeliveryID)
	}
	return "key " + c.OrderingKey
}

// claimsOf returns what claims cover, in their order.
func claimsOf(cs []store.Claim) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, claimWhat(c))
	}
	return out
}

func mustClaim(t *testing.T, c store.ClaimingInbox, owner string, ttl time.Duration, limit int) []store.Claim {
	t.Helper()
	cs, err := c.ClaimPending(context.Background(), owner, ttl, limit)
	must(t, "ClaimPending by "+owner, err)
	for _, cl := range cs {
		if cl.Owner != owner || cl.Token == 0 || cl.Name == "" {
			t.Fatalf("ClaimPending by %s returned %+v", owner, cl)
		}
	}
	return cs
}

// claimWhenFree polls ClaimPending until owner gets the claim on key.
func claimWhenFree(t *testing.T, c store.ClaimingInbox, owner, key string, ttl time.Duration) store.Claim {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		for _, cl := range mustClaim(t, c, owner, ttl, 100) {
			if cl.OrderingKey == key {
				return cl
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not claim key %s within %v", owner, key, waitLimit)
		}
	}
}

func testLeaseExclusive(t *testing.T, h *harness) {
	cs := claimingInstances(t, h, 3)
	if cs == nil {
		return
	}
	// Every instance races for the same lease from several goroutines:
	// one owner gets it, and every answer names that owner and token.
	const perInstance = 4
	type answer struct {
		owner string
		l     store.Lease
		held  bool
	}
	var mu sync.Mutex
	var answers []answer
	var wg sync.WaitGroup
	for i, c := range cs {
		for g := range perInstance {
			owner := fmt.Sprintf("owner-%d-%d", i, g)
			wg.Go(func() {
				l, held, err := c.AcquireLease(context.Background(), "leader", owner, time.Minute)
				if err != nil {
					t.Errorf("AcquireLease by %s: %v", owner, err)
					return
				}
				mu.Lock()
				answers = append(answers, answer{owner, l, held})
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	var winner *answer
	for i, a := range answers {
		if a.held {
			if winner != nil {
				t.Fatalf("%s and %s both hold the lease", winner.owner, a.owner)
			}
			winner = &answers[i]
		}
	}
	if winner == nil {
		t.Fatalf("no one got a free lease: %+v", answers)
	}
	if winner.l.Owner != winner.owner || winner.l.Name != "leader" {
		t.Fatalf("the winner %s got %+v", winner.owner, winner.l)
	}
	for _, a := range answers {
		if !a.held && (a.l.Owner != winner.owner || a.l.Token != winner.l.Token) {
			t.Fatalf("%s was told the holder is %+v, but %s holds %+v", a.owner, a.l, winner.owner, winner.l)
		}
	}
	// The holder asking again renews: same token.
	again, held := mustAcquire(t, cs[1], "leader", winner.owner, time.Minute)
	if !held || again.Token != winner.l.Token {
		t.Fatalf("the holder acquiring again got %+v (held %v), want a renewal of %+v", again, held, winner.l)
	}
	if again.Expires.Before(winner.l.Expires) {
		t.Fatalf("renewal moved the expiry back from %v to %v", winner.l.Expires, again.Expires)
	}
}

func testLeaseExpires(t *testing.T, h *harness) {
	cs := claimingInstances(t, h, 2)
	if cs == nil {
		return
	}
	a, b := cs[0], cs[1]
	la, held := mustAcquire(t, a, "leader", "a", leaseTTL)
	if !held {
		t.Fatal("a fresh lease is held by someone")
	}
	if _, held := mustAcquire(t, b, "leader", "b", leaseTTL); held {
		t.Fatal("b took a lease a holds")
	}
	lb := acquireWhenFree(t, b, "leader", "b", leaseTTL)
	if lb.Token <= la.Token {
		t.Fatalf("b's token %d after a's %d: tokens must grow", lb.Token, la.Token)
	}
	// b got it only once a's lease had expired, by the same clock.
	if lb.Expires.Sub(la.Expires) < 0 {
		t.Fatalf("b's lease expires at %v, before a's did (%v)", lb.Expires, la.Expires)
	}
	if got, held := mustAcquire(t, a, "leader", "a", leaseTTL); held || got.Owner != "b" {
		t.Fatalf("a took the lease back from b: %+v (held %v)", got, held)
	}
}

func testLeaseRenewAndTakeover(t *testing.T, h *harness) {
	cs := claimingInstances(t, h, 2)
	if cs == nil {
		return
	}
	ctx := context.Background()
	a, b := cs[0], cs[1]
	la, _ := mustAcquire(t, a, "leader", "a", leaseTTL)
	renewed, err := a.RenewLease(ctx, la, time.Minute)
	must(t, "RenewLease", err)
	if renewed.Token != la.Token || !renewed.Expires.After(la.Expires) {
		t.Fatalf("renewal of %+v gave %+v: want the same token, expiring later", la, renewed)
	}
	// Renewed for a minute: b cannot take it.
	if got, held := mustAcquire(t, b, "leader", "b", leaseTTL); held || got.Token != la.Token {
		t.Fatalf("b took a renewed lease: %+v (held %v)", got, held)
	}
	// a renews for a short time and stops; b takes over once it expires.
	_, err = a.RenewLease(ctx, la, leaseTTL)
	must(t, "RenewLease", err)
	lb := acquireWhenFree(t, b, "leader", "b", time.Minute)
	_, err = a.RenewLease(ctx, la, time.Minute)
	wantErr(t, "a's renewal after b took over", err, store.ErrLeaseLost)
	// Releasing a lost lease is not an error and leaves b's alone.
	must(t, "a's release of its lost lease", a.ReleaseLease(ctx, la))
	if got, held := mustAcquire(t, a, "leader", "c", time.Minute); held || got.Owner != "b" || got.Token != lb.Token {
		t.Fatalf("after a released a lost lease, the lease is %+v (held by c: %v), want b's %+v", got, held, lb)
	}
}

func testLeaseRelease(t *testing.T, h *harness) {
	cs := claimingInstances(t, h, 2)
	if cs == nil {
		return
	}
	ctx := context.Background()
	a, b := cs[0], cs[1]
	la, _ := mustAcquire(t, a, "leader", "a", time.Hour)
	must(t, "ReleaseLease", a.ReleaseLease(ctx, la))
	lb, held := mustAcquire(t, b, "leader", "b", time.Hour)
	if !held {
		t.Fatalf("after a released its hour-long lease, b could not take it: %+v", lb)
	}
	if lb.Token <= la.Token {
		t.Fatalf("b's token %d after a's %d", lb.Token, la.Token)
	}
	_, err := a.RenewLease(ctx, la, time.Hour)
	wantErr(t, "renewal of a released lease", err, store.ErrLeaseLost)
}

func testLeaseTokensGrow(t *testing.T, h *harness) {
	cs := claimingInstances(t, h, 2)
	if cs == nil {
		return
	}
	ctx := context.Background()
	var last int64
	for i := range 6 {
		c, owner := cs[i%2], []string{"a", "b"}[i%2]
		if i == 4 {
			owner = "b" // The same owner again after its own release.
		}
		l, held := mustAcquire(t, c, "leader", owner, time.Hour)
		if !held {
			t.Fatalf("round %d: %s could not take a released lease: %+v", i, owner, l)
		}
		if l.Token <= last {
			t.Fatalf("round %d: token %d after %d: tokens must grow with every new holder", i, l.Token, last)
		}
		last = l.Token
		if again, _ := mustAcquire(t, c, "leader", owner, time.Hour); again.Token != l.Token {
			t.Fatalf("round %d: the holder's renewal changed the token from %d to %d", i, l.Token, again.Token)
		}
		must(t, "ReleaseLease", c.ReleaseLease(ctx, l))
	}
	// Another lease name has tokens of its own, which never repeat one
	// handed out.
	other, _ := mustAcquire(t, cs[0], "compactor", "a", time.Hour)
	if other.Token == last {
		t.Fatalf("two leases got token %d", last)
	}
}

func testClaimsDisjoint(t *testing.T, h *harness) {
	cs := claimingInstances(t, h, 3)
	if cs == nil {
		return
	}
	const keys, perKey, loose = 40, 3, 10
	want := map[string]bool{}
	s := asStore(t, cs[0])
	for k := range keys {
		key := fmt.Sprintf("cal_%02d", k)
		want["key "+key] = true
		for j := range perKey {
			mustEnqueue(t, s, claimDelivery(key, fmt.Sprintf("d_%d_%d", k, j)))
		}
	}
	for j := range loose {
		id := mustEnqueue(t, s, claimDelivery("", fmt.Sprintf("loose_%d", j)))
		want[fmt.Sprintf("delivery %d", id)] = true
	}
	// Six claimants on three instances claim small batches at once until
	// everything is claimed.
	var mu sync.Mutex
	claimedBy := map[string]string{}
	var wg sync.WaitGroup
	for i, c := range cs {
		for g := range 2 {
			owner := fmt.Sprintf("owner-%d-%d", i, g)
			wg.Go(func() {
				deadline := time.Now().Add(waitLimit)
				for time.Now().Before(deadline) {
					got, err := c.ClaimPending(context.Background(), owner, time.Minute, 3)
					if err != nil {
						t.Errorf("ClaimPending by %s: %v", owner, err)
						return
					}
					mu.Lock()
					for _, cl := range got {
						w := claimWhat(cl)
						if prev, dup := claimedBy[w]; dup {
							t.Errorf("%s claimed by both %s and %s", w, prev, owner)
						}
						claimedBy[w] = owner
					}
					all := len(claimedBy) >= len(want)
					mu.Unlock()
					if all {
						return
					}
				}
			})
		}
	}
	wg.Wait()
	for w := range want {
		if _, ok := claimedBy[w]; !ok {
			t.Errorf("%s was never claimed", w)
		}
	}
	for w := range claimedBy {
		if !want[w] {
			t.Errorf("claimed %s, which has no pending delivery", w)
		}
	}
	if got := mustClaim(t, cs[1], "late", time.Minute, 100); len(got) != 0 {
		t.Fatalf("with every key claimed, ClaimPending returned %v", claimsOf(got))
	}
}

func testClaimsOrderAndDue(t *testing.T, h *harness) {
	cs := claimingInstances(t, h, 1)
	if cs == nil {
		return
	}
	ctx := context.Background()
	c := cs[0]
	s := asStore(t, c)
	// Keys in an order unlike their names' so that order by name and
	// order by oldest pending delivery differ.
	mustEnqueue(t, s, claimDelivery("cal_z", "z1"))
	mustEnqueue(t, s, claimDelivery("cal_z", "z2"))
	looseID := mustEnqueue(t, s, claimDelivery("", "loose"))
	notDue := mustEnqueue(t, s, claimDelivery("cal_late", "late1"))
	mustEnqueue(t, s, claimDelivery("cal_late", "late2"))
	mustEnqueue(t, s, claimDelivery("cal_a", "a1"))
	finished := mustEnqueue(t, s, claimDelivery("cal_done", "done1"))
	mustFinish(t, s, finished, done, "")
	// cal_late's head waits for a retry an hour away; its second delivery
	// is due, but must not pass it.
	must(t, "RecordAttempt", s.RecordAttempt(ctx, notDue, "provider down", time.Now().Add(time.Hour)))

	got := mustClaim(t, c, "a", time.Minute, 1)
	diffIDs(t, "ClaimPending with limit 1", []string{"key cal_z"}, claimsOf(got))
	got = mustClaim(t, c, "a", time.Minute, 10)
	diffIDs(t, "ClaimPending of the rest", []string{fmt.Sprintf("delivery %d", looseID), "key cal_a"}, claimsOf(got))
	for _, cl := range got {
		if cl.OrderingKey == "" && cl.DeliveryID != looseID {
			t.Fatalf("the claim on a delivery without a key names delivery %d, want %d", cl.DeliveryID, looseID)
		}
	}
	if got := mustClaim(t, c, "b", time.Minute, 10); len(got) != 0 {
		t.Fatalf("claimed %v: a key held, not due or without pending deliveries", claimsOf(got))
	}
}

func testClaimedDeliveries(t *testing.T, h *harness) {
	cs := claimingInstances(t, h, 2)
	if cs == nil {
		return
	}
	ctx := context.Background()
	a, b := cs[0], cs[1]
	s := asStore(t, a)
	var ids []int64
	for j := range 5 {
		ids = append(ids, mustEnqueue(t, s, claimDelivery("cal_a", fmt.Sprintf("a%d", j))))
		mustEnqueue(t, s, claimDelivery("cal_b", fmt.Sprintf("b%d", j)))
	}
	looseID := mustEnqueue(t, s, claimDelivery("", "loose"))
	mustFinish(t, s, ids[1], done, "")
	var claimA, claimLoose store.Claim
	for _, cl := range mustClaim(t, a, "a", leaseTTL, 10) {
		switch {
		case cl.OrderingKey == "cal_a":
			claimA = cl
		case cl.OrderingKey == "":
			claimLoose = cl
		}
	}
	if claimA.Token == 0 || claimLoose.Token == 0 {
		t.Fatal("ClaimPending did not claim cal_a and the delivery without a key")
	}
	page, err := a.ClaimedDeliveries(ctx, claimA, 0, 2)
	must(t, "ClaimedDeliveries", err)
	diffIDs(t, "first page of cal_a", idStrings(ids[0], ids[2]), deliveryIDs(page))
	if len(page[0].Body) == 0 || page[0].OrderingKey != "cal_a" {
		t.Fatalf("a claimed delivery comes without its body or key: %+v", page[0])
	}
	page, err = a.ClaimedDeliveries(ctx, claimA, ids[2], 10)
	must(t, "ClaimedDeliveries", err)
	diffIDs(t, "second page of cal_a", idStrings(ids[3], ids[4]), deliveryIDs(page))
	page, err = b.ClaimedDeliveries(ctx, claimLoose, 0, 10)
	must(t, "ClaimedDeliveries through another instance", err)
	diffIDs(t, "the delivery without a key", idStrings(looseID), deliveryIDs(page))

	// Once another owner took the key over, the old claim reads nothing.
	claimB := claimWhenFree(t, b, "b", "cal_a", time.Minute)
	if claimB.Token <= claimA.Token {
		t.Fatalf("the takeover's token %d is not greater than %d", claimB.Token, claimA.Token)
	}
	_, err = a.ClaimedDeliveries(ctx, claimA, 0, 10)
	wantErr(t, "ClaimedDeliveries of a claim taken over", err, store.ErrLeaseLost)
	page, err = a.ClaimedDeliveries(ctx, claimB, 0, 10)
	must(t, "ClaimedDeliveries of the new claim", err)
	diffIDs(t, "cal_a for its new owner", idStrings(ids[0], ids[2], ids[3], ids[4]), deliveryIDs(page))
	// A released claim reads nothing either.
	must(t, "ReleaseLease", b.ReleaseLease(ctx, claimB.Lease))
	_, err = b.ClaimedDeliveries(ctx, claimB, 0, 10)
	wantErr(t, "ClaimedDeliveries of a released claim", err, store.ErrLeaseLost)
}

func testClaimExpires(t *testing.T, h *harness) {
	cs := claimingInstances(t, h, 2)
	if cs == nil {
		return
	}
	ctx := context.Background()
	a, b := cs[0], cs[1]
	mustEnqueue(t, asStore(t, a), claimDelivery("cal_a", "a1"))
	got := mustClaim(t, a, "a", leaseTTL, 10)
	diffIDs(t, "a's claims", []string{"key cal_a"}, claimsOf(got))
	if got := mustClaim(t, b, "b", leaseTTL, 10); len(got) != 0 {
		t.Fatalf("b claimed %v, which a holds", claimsOf(got))
	}
	// a renews its claim once; then stops, and b takes the key over.
	renewed, err := a.RenewLease(ctx, got[0].Lease, leaseTTL)
	must(t, "RenewLease of a claim", err)
	if renewed.Token != got[0].Token {
		t.Fatalf("renewing a claim changed its token from %d to %d", got[0].Token, renewed.Token)
	}
	claimB := claimWhenFree(t, b, "b", "cal_a", time.Minute)
	if claimB.Token <= got[0].Token {
		t.Fatalf("b's token %d is not greater than a's %d", claimB.Token, got[0].Token)
	}
	_, err = a.RenewLease(ctx, renewed, leaseTTL)
	wantErr(t, "a's renewal after b took over", err, store.ErrLeaseLost)
	// A released claim is claimable again at once.
	must(t, "ReleaseLease", b.ReleaseLease(ctx, claimB.Lease))
	again := mustClaim(t, a, "a", time.Minute, 10)
	diffIDs(t, "claims after b released", []string{"key cal_a"}, claimsOf(again))
	if again[0].Token <= claimB.Token {
		t.Fatalf("a's new token %d is not greater than b's %d", again[0].Token, claimB.Token)
	}
}

// leaseTx runs fn in an Update of s with the transaction as a LeaseTx.
func leaseTx(t *testing.T, s store.Store, fn func(tx store.LeaseTx) error) error {
	return s.Update(context.Background(), func(tx store.Tx) error {
		ltx, ok := tx.(store.LeaseTx)
		if !ok {
			t.Errorf("%T implements Leaser, but its transaction %T is not a LeaseTx", s, tx)
			return errors.New("not a LeaseTx")
		}
		return fn(ltx)
	})
}

func testStalledClaimant(t *testing.T, h *harness) {
	cs := claimingInstances(t, h, 2)
	if cs == nil {
		return
	}
	ctx := context.Background()
	a, b := cs[0], cs[1]
	sa, sb := asStore(t, a), asStore(t, b)
	id := mustEnqueue(t, sa, claimDelivery("cal_a", "a1"))
	claimA := mustClaim(t, a, "a", leaseTTL, 10)
	if len(claimA) != 1 {
		t.Fatalf("a claimed %v, want cal_a", claimsOf(claimA))
	}
	// a stalls past its claim; b takes the key over.
	claimB := claimWhenFree(t, b, "b", "cal_a", time.Minute)

	// a wakes up and records its work, checking its claim in the same
	// transaction: nothing it wrote is kept.
	err := leaseTx(t, sa, func(tx store.LeaseTx) error {
		if err := tx.PutEvent(ctx, event("evt_stale", "cal_a", at(0), at(time.Hour))); err != nil {
			return err
		}
		if _, err := tx.AppendChange(ctx, created(event("evt_stale", "cal_a", at(0), at(time.Hour)))); err != nil {
			return err
		}
		if err := tx.FinishDelivery(ctx, id, done, "stale"); err != nil {
			return err
		}
		return tx.CheckLease(ctx, claimA[0].Lease)
	})
	wantErr(t, "the stalled claimant's commit", err, store.ErrLeaseLost)
	if _, err := sb.GetEvent(ctx, "evt_stale", false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the stalled claimant's event was stored (GetEvent: %v)", err)
	}
	if recs := mustReadAll(t, sb, 0); len(recs) != 0 {
		t.Fatalf("the stalled claimant's change reached the log: %d changes", len(recs))
	}
	if d := mustGetDelivery(t, sb, id); d.State != pending {
		t.Fatalf("the stalled claimant finished the delivery: %+v", d)
	}
	// The new owner commits under its claim.
	must(t, "the new owner's commit", leaseTx(t, sb, func(tx store.LeaseTx) error {
		if err := tx.CheckLease(ctx, claimB.Lease); err != nil {
			return err
		}
		if err := tx.PutEvent(ctx, event("evt_fresh", "cal_a", at(0), at(time.Hour))); err != nil {
			return err
		}
		return tx.FinishDelivery(ctx, id, done, "")
	}))
	if d := mustGetDelivery(t, sa, id); d.State != done {
		t.Fatalf("after the new owner's commit the delivery is %v", d.State)
	}
}

// openLeaseTx starts an Update through s that checks l, runs write, and
// then waits for release before it commits. It returns once the check
// passed, with a channel that gets the Update's outcome.
func openLeaseTx(t *testing.T, s store.Store, l store.Lease, write func(tx store.Tx) error) (release func(), outcome <-chan error) {
	t.Helper()
	ctx := context.Background()
	checked, hold := make(chan error, 1), make(chan struct{})
	out := make(chan error, 1)
	go func() {
		out <- leaseTx(t, s, func(tx store.LeaseTx) error {
			err := tx.CheckLease(ctx, l)
			if err == nil {
				err = write(tx)
			}
			checked <- err
			if err != nil {
				return err
			}
			<-hold
			return nil
		})
	}()
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	if err := <-checked; err != nil {
		t.Fatalf("CheckLease of a lease held: %v", err)
	}
	return release, out
}

// takeover is what a contender for a lease got, and whether it got it
// before the transaction that had checked the lease was let go.
type takeover struct {
	l     store.Lease
	early bool
	err   error
}

// watchTakeover runs try until it takes the lease over (or fails, or the
// wait limit passes) and reports the outcome, marked early unless letGo
// was set when try returned. try may wait, or keep failing to take it.
func watchTakeover(letGo *atomic.Bool, try func() (store.Lease, bool, error)) <-chan takeover {
	out := make(chan takeover, 1)
	go func() {
		deadline := time.Now().Add(waitLimit)
		for {
			l, took, err := try()
			if err != nil || took {
				out <- takeover{l: l, early: !letGo.Load(), err: err}
				return
			}
			if time.Now().After(deadline) {
				out <- takeover{err: fmt.Errorf("not taken over within %v", waitLimit)}
				return
			}
		}
	}()
	return out
}

// observe gives a wrong takeover, one made while the transaction that
// checked the lease is open, a window to show in: the lease has expired
// already, so a backend that ignores the check hands it over at once.
func observe(t *testing.T, got <-chan takeover) {
	t.Helper()
	select {
	case r := <-got:
		must(t, "the takeover", r.err)
		t.Fatalf("%s took over %q (token %d) while the transaction that checked it was open",
			r.l.Owner, r.l.Name, r.l.Token)
	case <-time.After(3 * leaseTTL):
	}
}

func testCheckedLeaseHolds(t *testing.T, h *harness) {
	cs := claimingInstances(t, h, 2)
	if cs == nil {
		return
	}
	ctx := context.Background()
	a, b := cs[0], cs[1]
	la, _ := mustAcquire(t, a, "leader", "a", leaseTTL)
	release, outcome := openLeaseTx(t, asStore(t, a), la, func(tx store.Tx) error {
		return tx.PutEvent(ctx, event("evt_leader", "cal_a", at(0), at(time.Hour)))
	})
	// The lease expires while a's transaction is open; b either waits for
	// that transaction or is refused until it ends.
	waitExpired(t, a, leaseTTL)
	var letGo atomic.Bool
	got := watchTakeover(&letGo, func() (store.Lease, bool, error) {
		return b.AcquireLease(ctx, "leader", "b", time.Minute)
	})
	observe(t, got)
	letGo.Store(true)
	release()
	must(t, "a's commit under its checked lease", <-outcome)
	r := <-got
	must(t, "b's takeover", r.err)
	if r.early {
		t.Fatalf("b took over %+v while a's transaction that checked it was open", la)
	}
	if r.l.Token <= la.Token {
		t.Fatalf("b's token %d is not greater than a's %d", r.l.Token, la.Token)
	}
	// a's write committed, and before b got the lease: a's Update
	// returned nil, and b's answer came after a was let go.
	if _, err := asStore(t, b).GetEvent(ctx, "evt_leader", false); err != nil {
		t.Fatalf("a's write under its checked lease: %v", err)
	}
}

func testCheckedClaimHolds(t *testing.T, h *harness) {
	cs := claimingInstances(t, h, 2)
	if cs == nil {
		return
	}
	ctx := context.Background()
	a, b := cs[0], cs[1]
	sa := asStore(t, a)
	first := mustEnqueue(t, sa, claimDelivery("cal_a", "a1"))
	second := mustEnqueue(t, sa, claimDelivery("cal_a", "a2"))
	claimA := mustClaim(t, a, "a", leaseTTL, 10)
	if len(claimA) != 1 {
		t.Fatalf("a claimed %v, want cal_a", claimsOf(claimA))
	}
	release, outcome := openLeaseTx(t, sa, claimA[0].Lease, func(tx store.Tx) error {
		return tx.FinishDelivery(ctx, first, done, "")
	})
	waitExpired(t, a, leaseTTL)
	var letGo atomic.Bool
	var claimB store.Claim
	got := watchTakeover(&letGo, func() (store.Lease, bool, error) {
		cs, err := b.ClaimPending(ctx, "b", time.Minute, 10)
		for _, c := range cs {
			if c.OrderingKey == "cal_a" {
				claimB = c
				return c.Lease, true, err
			}
		}
		return store.Lease{}, false, err
	})
	observe(t, got)
	letGo.Store(true)
	release()
	must(t, "a's commit under its checked claim", <-outcome)
	r := <-got
	must(t, "b's claim", r.err)
	if r.early {
		t.Fatalf("b claimed cal_a while a's transaction that checked the claim was open")
	}
	if claimB.Token <= claimA[0].Token {
		t.Fatalf("b's token %d is not greater than a's %d", claimB.Token, claimA[0].Token)
	}
	// b sees what a committed: the first delivery is done, the second waits.
	page, err := b.ClaimedDeliveries(ctx, claimB, 0, 10)
	must(t, "ClaimedDeliveries", err)
	diffIDs(t, "b's deliveries", idStrings(second), deliveryIDs(page))
}

func testLostLeaseInBatch(t *testing.T, h *harness) {
	cs := claimingInstances(t, h, 1)
	if cs == nil {
		return
	}
	ctx := context.Background()
	c := cs[0]
	s := asStore(t, c)
	lost, _ := mustAcquire(t, c, "leader", "a", time.Hour)
	must(t, "ReleaseLease", c.ReleaseLease(ctx, lost))
	held, _ := mustAcquire(t, c, "compactor", "a", time.Hour)

	// A first Update holds the writer while the others queue behind it, so
	// that they are likely to share one transaction.
	entered, hold := make(chan struct{}), make(chan struct{})
	firstDone := make(chan error, 1)
	go func() {
		firstDone <- s.Update(ctx, func(tx store.Tx) error {
			close(entered)
			<-hold
			return tx.PutEvent(ctx, event("evt_first", "cal_a", at(0), at(time.Hour)))
		})
	}()
	<-entered
	const n = 6
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = leaseTx(t, s, func(tx store.LeaseTx) error {
				id := fmt.Sprintf("evt_%d", i)
				if err := tx.PutEvent(ctx, event(id, "cal_a", at(0), at(time.Hour))); err != nil {
					return err
				}
				if _, err := tx.AppendChange(ctx, created(event(id, "cal_a", at(0), at(time.Hour)))); err != nil {
					return err
				}
				if i%2 == 0 {
					return tx.CheckLease(ctx, lost)
				}
				return tx.CheckLease(ctx, held)
			})
		})
	}
	// The others queue behind the first while it holds the writer; release
	// it. Whether they then share a transaction or not, each must get its
	// own outcome.
	close(hold)
	wg.Wait()
	must(t, "the first Update", <-firstDone)
	var kept []string
	for i, err := range errs {
		id := fmt.Sprintf("evt_%d", i)
		_, getErr := s.GetEvent(ctx, id, false)
		if i%2 == 0 {
			wantErr(t, "an Update under a lost lease", err, store.ErrLeaseLost)
			if !errors.Is(getErr, store.ErrNotFound) {
				t.Fatalf("%s, written under a lost lease, was stored (GetEvent: %v)", id, getErr)
			}
			continue
		}
		must(t, "an Update under a held lease, batched with lost ones", err)
		must(t, "GetEvent of "+id, getErr)
		kept = append(kept, id)
	}
	var logged []string
	for _, r := range mustReadAll(t, s, 0) {
		logged = append(logged, fmt.Sprint(r.Cursor))
	}
	if len(logged) != len(kept) {
		t.Fatalf("the log holds %d changes, want the %d of the Updates that held their lease", len(logged), len(kept))
	}
	checkGapFree(t, "the log", mustReadAll(t, s, 0))
}

func testRateBurst(t *testing.T, h *harness) {
	rs := rateLimiters(t, h, 2)
	if rs == nil {
		return
	}
	ctx := context.Background()
	const burst = 3
	for i := range burst {
		wait, err := rs[i%2].TakeToken(ctx, "recall:key1", time.Hour, burst)
		must(t, "TakeToken", err)
		if wait != 0 {
			t.Fatalf("token %d of a full bucket of %d: told to wait %v", i+1, burst, wait)
		}
	}
	wait, err := rs[1].TakeToken(ctx, "recall:key1", time.Hour, burst)
	must(t, "TakeToken", err)
	if wait <= 0 || wait > time.Hour {
		t.Fatalf("an empty bucket refilling once an hour says wait %v", wait)
	}
	// Another bucket is full still.
	wait, err = rs[0].TakeToken(ctx, "recall:key2", time.Hour, burst)
	must(t, "TakeToken", err)
	if wait != 0 {
		t.Fatalf("a fresh bucket says wait %v", wait)
	}
	// After the wait it is told, a caller gets a token.
	const every = 100 * time.Millisecond
	for range 2 {
		wait, err = rs[0].TakeToken(ctx, "fast", every, 1)
		must(t, "TakeToken", err)
	}
	if wait <= 0 || wait > every {
		t.Fatalf("a bucket of one refilling every %v says wait %v", every, wait)
	}
	<-time.After(wait)
	wait, err = rs[1].TakeToken(ctx, "fast", every, 1)
	must(t, "TakeToken", err)
	if wait != 0 {
		t.Fatalf("after waiting as told, still told to wait %v", wait)
	}
}

func testRateShared(t *testing.T, h *harness) {
	rs := rateLimiters(t, h, 2)
	if rs == nil {
		return
	}
	const (
		every  = 20 * time.Millisecond
		burst  = 5
		window = 600 * time.Millisecond
	)
	// Four callers on two instances take tokens as fast as they are told
	// they may, for a while.
	var mu sync.Mutex
	var taken, refused int
	began := time.Now()
	var wg sync.WaitGroup
	for g := range 4 {
		r := rs[g%2]
		wg.Go(func() {
			for time.Since(began) < window {
				wait, err := r.TakeToken(context.Background(), "shared", every, burst)
				if err != nil {
					t.Errorf("TakeToken: %v", err)
					return
				}
				mu.Lock()
				if wait == 0 {
					taken++
				} else {
					refused++
				}
				mu.Unlock()
				if wait > 0 {
					<-time.After(min(wait, every))
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(began)
	limit := burst + int(elapsed/every)
	t.Logf("%d tokens taken, %d refused in %v (at most %d allowed)", taken, refused, elapsed, limit)
	if taken > limit {
		t.Fatalf("%d tokens taken in %v from a bucket of %d refilling every %v: more than %d", taken, elapsed, burst, every, limit)
	}
	if taken < burst || refused == 0 {
		t.Fatalf("%d taken, %d refused: want the burst taken and callers held back after it", taken, refused)
	}
}
