package cluster_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calsync/calsync/cluster"
	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/postgres"
	"github.com/calsync/calsync/store/sqlite"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// testTTL is short so that takeovers happen within a test's patience.
const testTTL = 2 * time.Second

// openShared opens n store instances on one fresh database, as n replicas
// would.
func openShared(t *testing.T, n int) []*postgres.DB {
	t.Helper()
	url := pgtest.NewDatabase(t)
	var dbs []*postgres.DB
	for range n {
		db, err := postgres.Open(context.Background(), url, postgres.Options{TempDir: t.TempDir(), MaxConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs = append(dbs, db)
	}
	return dbs
}

// replica is one elector running until stopped.
type replica struct {
	e       *cluster.Elector
	stop    context.CancelFunc
	done    chan struct{}
	changes atomic.Int64
}

func startReplica(t *testing.T, st any, owner string) *replica {
	t.Helper()
	r := &replica{done: make(chan struct{})}
	r.e = cluster.NewElector(st, cluster.ElectorConfig{Owner: owner, TTL: testTTL,
		OnChange: func(bool) { r.changes.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = func() { cancel(); <-r.done }
	go func() { r.e.Run(ctx); close(r.done) }()
	t.Cleanup(r.stop)
	return r
}

// leaders returns the indexes of the replicas leading now.
func leaders(rs []*replica) []int {
	var out []int
	for i, r := range rs {
		if r != nil && r.e.Leading() {
			out = append(out, i)
		}
	}
	return out
}

// waitOneLeader waits until exactly one of rs leads, within d, and
// returns its index.
func waitOneLeader(t *testing.T, rs []*replica, d time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if l := leaders(rs); len(l) == 1 {
			return l[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no single leader within %v: leading %v", d, leaders(rs))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestElectorOneLeader: of three replicas exactly one leads, and stays the
// only one; when it stops, another takes over within TTL plus a renewal
// interval, and it alone leads.
func TestElectorOneLeader(t *testing.T) {
	dbs := openShared(t, 3)
	var rs []*replica
	for i, db := range dbs {
		rs = append(rs, startReplica(t, db, fmt.Sprintf("replica-%d", i)))
	}
	first := waitOneLeader(t, rs, 2*testTTL)
	// Several renewals later it is still the only one.
	for end := time.Now().Add(testTTL); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if l := leaders(rs); len(l) != 1 || l[0] != first {
			t.Fatalf("leaders %v, want only %d", l, first)
		}
	}
	stopped := time.Now()
	rs[first].stop()
	if rs[first].e.Leading() {
		t.Fatal("a stopped elector still leads")
	}
	rs[first] = nil
	next := waitOneLeader(t, rs, testTTL+testTTL/3+500*time.Millisecond)
	t.Logf("leadership moved from %d to %d in %v", first, next, time.Since(stopped))
}

// unreachable is a leaser whose database stops answering when cut is set,
// as a replica cut off from PostgreSQL (or stalled) sees it.
type unreachable struct {
	*postgres.DB
	cut atomic.Bool
}

func (u *unreachable) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (store.Lease, bool, error) {
	if u.cut.Load() {
		return store.Lease{}, false, fmt.Errorf("cut off: %w", store.ErrUnavailable)
	}
	return u.DB.AcquireLease(ctx, name, owner, ttl)
}

func (u *unreachable) RenewLease(ctx context.Context, l store.Lease, ttl time.Duration) (store.Lease, error) {
	if u.cut.Load() {
		return store.Lease{}, fmt.Errorf("cut off: %w", store.ErrUnavailable)
	}
	return u.DB.RenewLease(ctx, l, ttl)
}

// TestElectorCutOffLeaderStepsDown: a leader that can no longer renew
// (the process killed, stalled or cut off: it cannot release) stops
// leading by its own clock within the TTL, and another replica takes over
// once the lease expired, so two never lead at once.
func TestElectorCutOffLeaderStepsDown(t *testing.T) {
	dbs := openShared(t, 2)
	cut := &unreachable{DB: dbs[0]}
	rs := []*replica{startReplica(t, cut, "replica-0")}
	waitOneLeader(t, rs, 2*testTTL)
	rs = append(rs, startReplica(t, dbs[1], "replica-1"))
	cutAt := time.Now()
	cut.cut.Store(true)
	var overlap bool
	deadline := cutAt.Add(testTTL + testTTL/3 + 500*time.Millisecond)
	for !rs[1].e.Leading() {
		if rs[0].e.Leading() && rs[1].e.Leading() {
			overlap = true
		}
		if time.Now().After(deadline) {
			t.Fatalf("no takeover within %v of the leader being cut off", time.Since(cutAt))
		}
		time.Sleep(2 * time.Millisecond)
	}
	if overlap || rs[0].e.Leading() {
		t.Fatal("the cut-off leader still led when the other took over")
	}
	t.Logf("takeover %v after the cut", time.Since(cutAt))
}

// TestWhileLeading: the function runs only while its replica leads, is
// canceled when leadership is lost, and runs again when it comes back.
func TestWhileLeading(t *testing.T) {
	dbs := openShared(t, 2)
	cut := &unreachable{DB: dbs[0]}
	r0 := startReplica(t, cut, "replica-0")
	waitOneLeader(t, []*replica{r0}, 2*testTTL)

	var mu sync.Mutex
	var runs []string // "start" and "stop", in order
	record := func(s string) { mu.Lock(); runs = append(runs, s); mu.Unlock() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r0.e.WhileLeading(ctx, func(ctx context.Context) {
			record("start")
			<-ctx.Done()
			record("stop")
		})
	}()
	waitRuns := func(want string) {
		t.Helper()
		deadline := time.Now().Add(3 * testTTL)
		for {
			mu.Lock()
			got := strings.Join(runs, ",")
			mu.Unlock()
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("runs %q, want %q", got, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitRuns("start")
	// Another replica takes the lease while this one is cut off.
	cut.cut.Store(true)
	r1 := startReplica(t, dbs[1], "replica-1")
	waitRuns("start,stop")
	// It comes back once the other gives the lease up.
	cut.cut.Store(false)
	r1.stop()
	waitRuns("start,stop,start")
	cancel()
	<-done
	waitRuns("start,stop,start,stop")
	if n := r0.changes.Load(); n != 3 {
		t.Errorf("%d leadership changes reported, want 3 (lead, lose, lead again)", n)
	}
}

// TestElectorWithoutLeases: a store one process owns has no leases, and
// its process leads from the start.
func TestElectorWithoutLeases(t *testing.T) {
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "calsync.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	e := cluster.NewElector(db, cluster.ElectorConfig{})
	if !e.Leading() {
		t.Fatal("a single process does not lead")
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go e.WhileLeading(ctx, func(context.Context) { close(ran) })
	<-ran
	cancel()
}

func TestReplicaID(t *testing.T) {
	id := cluster.ReplicaID()
	host, _ := os.Hostname()
	if !strings.HasPrefix(id, fmt.Sprintf("%s-%d-", host, os.Getpid())) || id != cluster.ReplicaID() {
		t.Fatalf("ReplicaID() = %q: want %s-%d-<random>, the same at every call", id, host, os.Getpid())
	}
}
