package main

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// PeersResult is etcd measured with the same load shapes as calsync.
type PeersResult struct {
	Command string      `json:"command"`
	Started time.Time   `json:"started"`
	Machine Machine     `json:"machine"`
	Version string      `json:"etcd_version"`
	Put     *LoadResult `json:"put,omitempty"`
	PutCPU  *Server     `json:"put_server,omitempty"`
	// Pairs are calsync's fan-out and etcd's put → watch of the same shape
	// run back to back, the first of each pair alternating, so that both
	// meet the same host: on a shared machine the disk's stalls and the
	// other tenants' load come and go within minutes, and a p99 follows
	// them.
	Pairs []PeerPair `json:"pairs,omitempty"`
}

// PeerPair is one calsync fan-out and one etcd put → watch, back to back.
type PeerPair struct {
	First   string       `json:"first"` // "calsync" or "etcd"
	Calsync FanoutResult `json:"calsync"`
	Etcd    PeerFanout   `json:"etcd"`
}

// pairedP99s returns the pairs' sent→received p99s, calsync's and etcd's.
func (p *PeersResult) pairedP99s() (calsync, etcd []float64) {
	for _, pr := range p.Pairs {
		calsync = append(calsync, pr.Calsync.Latency.P99)
		etcd = append(etcd, pr.Etcd.Latency.P99)
	}
	return calsync, etcd
}

// PeerFanout is etcd put → watch at a fixed rate with calsync's watcher
// shape: one watcher per calendar prefix plus unfiltered ones.
type PeerFanout struct {
	Rate       float64    `json:"rate"`
	Filtered   int        `json:"filtered_watchers"`
	Unfiltered int        `json:"unfiltered_watchers"`
	Load       LoadResult `json:"load"`
	Latency    Summary    `json:"put_to_watch"`
	Received   int64      `json:"events_received"`
	Missing    int64      `json:"missing"`
	Server     Server     `json:"server"`
}

// startEtcd runs etcd on a fresh data dir with its default durability
// (every commit is fsynced).
func startEtcd(ctx context.Context, bin, dir string) (*Child, string, error) {
	client, peer := freeAddr(), freeAddr()
	argv := []string{bin, "--data-dir", filepath.Join(dir, "etcd"), "--name", "bench",
		"--listen-client-urls", "http://" + client, "--advertise-client-urls", "http://" + client,
		"--listen-peer-urls", "http://" + peer, "--initial-advertise-peer-urls", "http://" + peer,
		"--initial-cluster", "bench=http://" + peer, "--log-level", "warn"}
	c, err := startChild(ctx, "etcd", argv, []string{"ETCD_UNSUPPORTED_ARCH=" + goarch()}, dir, "http://"+client+"/health")
	if err != nil {
		return nil, "", err
	}
	c.GRPCAddr = client
	return c, client, nil
}

func goarch() string {
	out, _ := exec.Command("go", "env", "GOARCH").Output()
	return strings.TrimSpace(string(out))
}

// etcdPeer is a running etcd on a fresh data dir with clients to it.
type etcdPeer struct {
	child   *Child
	clients []*clientv3.Client
}

func startEtcdPeer(ctx context.Context, bin, dir string) (*etcdPeer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c, addr, err := startEtcd(ctx, bin, dir)
	if err != nil {
		return nil, err
	}
	e := &etcdPeer{child: c}
	for range 16 {
		cl, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			e.stop()
			return nil, err
		}
		e.clients = append(e.clients, cl)
	}
	return e, nil
}

func (e *etcdPeer) stop() {
	for _, cl := range e.clients {
		cl.Close()
	}
	e.child.Stop(10 * time.Second)
}

// runPeers measures etcd: closed-loop puts over the same number of
// connections as calsync's ingestion; then, p.PeerPairs times, calsync's
// fan-out and etcd's put → watch at the fan-out's rate with its watchers,
// back to back, each on a fresh server.
func runPeers(ctx context.Context, p Profile, etcdBin, calsyncBin, out, md string) error {
	res := &PeersResult{Command: "calsync-bench " + strings.Join(os.Args[1:], " "), Started: time.Now().UTC(), Machine: machine()}
	if v, err := exec.Command(etcdBin, "--version").Output(); err == nil {
		res.Version = strings.TrimSpace(strings.SplitN(string(v), "\n", 2)[0])
	}
	env, err := newEnv(p, calsyncBin)
	if err != nil {
		return err
	}
	defer os.RemoveAll(env.Dir)
	defer env.Fake.Close()
	value := bytes.Repeat([]byte("x"), 700) // about a postpress webhook body

	// Closed-loop puts, one goroutine per "connection" as for calsync.
	peer, err := startEtcdPeer(ctx, etcdBin, filepath.Join(env.Dir, "etcd-put"))
	if err != nil {
		return err
	}
	before, smp := peer.child.Stats(), sample(peer.child)
	put := closedLoopPuts(ctx, peer.clients, p.Conns, p.Duration, value)
	res.Put = &put
	use := serverUse(peer.child, before, time.Duration(put.Seconds*float64(time.Second)), smp.done(), put.OK)
	res.PutCPU = &use
	peer.stop()
	log.Printf("etcd put: %.0f/s, p50 %.2f ms p99 %.2f ms", put.Throughput, put.Answer.P50, put.Answer.P99)

	for i := range p.PeerPairs {
		pair := PeerPair{First: "calsync"}
		if i%2 == 1 {
			pair.First = "etcd"
		}
		runCalsync := func() error {
			c, err := env.calsync(ctx, fmt.Sprintf("peer fanout %d", i+1), 0, "FULL")
			if err != nil {
				return err
			}
			defer c.Stop(10 * time.Second)
			pair.Calsync, err = env.fanout(ctx, c, fmt.Sprintf("calsync fanout, pair %d", i+1), p.FanoutRate, p.FilteredStreams, p.UnfilteredStreams, p.Duration, true)
			return err
		}
		runEtcd := func() error {
			peer, err := startEtcdPeer(ctx, etcdBin, filepath.Join(env.Dir, fmt.Sprintf("etcd-%d", i+1)))
			if err != nil {
				return err
			}
			defer peer.stop()
			f, err := etcdFanout(ctx, peer.child, peer.clients, p.FanoutRate, p.FilteredStreams, p.UnfilteredStreams, p.Duration, value)
			if err != nil {
				return err
			}
			pair.Etcd = *f
			log.Printf("etcd put→watch, pair %d: p50 %.2f ms p99 %.2f ms max %.1f ms, missing %d; machine stalled on I/O %.0f ms",
				i+1, f.Latency.P50, f.Latency.P99, f.Latency.Max, f.Missing, f.Server.IOStallMs)
			return nil
		}
		steps := []func() error{runCalsync, runEtcd}
		if pair.First == "etcd" {
			steps[0], steps[1] = steps[1], steps[0]
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return fmt.Errorf("pair %d: %w", i+1, err)
			}
		}
		res.Pairs = append(res.Pairs, pair)
	}
	res.Machine.LoadAfter = loadavg()
	if err := writeJSON(out, res); err != nil {
		return err
	}
	return writeMarkdown(md)
}

func closedLoopPuts(ctx context.Context, clients []*clientv3.Client, conns int, dur time.Duration, value []byte) LoadResult {
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	var ok, errs atomic.Int64
	lat := &Latencies{}
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conns {
		wg.Go(func() {
			var local []time.Duration
			cl := clients[w%len(clients)]
			for i := 0; ctx.Err() == nil; i++ {
				t := time.Now()
				_, err := cl.Put(ctx, fmt.Sprintf("/load/%d/%d", w, i%50), string(value))
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				ok.Add(1)
				local = append(local, time.Since(t))
			}
			lat.Merge(local)
		})
	}
	wg.Wait()
	el := time.Since(start)
	return LoadResult{Sent: ok.Load() + errs.Load(), OK: ok.Load(), Errors: errs.Load(), Seconds: el.Seconds(), Throughput: float64(ok.Load()) / el.Seconds(), Answer: lat.Summary()}
}

// etcdFanout puts keys /cal/<n>/<event> at rate, each value carrying its
// due time, while filtered watchers watch one /cal/<n>/ prefix each and
// unfiltered ones watch /cal/.
func etcdFanout(ctx context.Context, c *Child, clients []*clientv3.Client, rate float64, filtered, unfiltered int, dur time.Duration, value []byte) (*PeerFanout, error) {
	cals := max(filtered, 100)
	res := &PeerFanout{Rate: rate, Filtered: filtered, Unfiltered: unfiltered}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var received atomic.Int64
	var mu sync.Mutex
	var lats []time.Duration
	var wg sync.WaitGroup
	// registered counts the watches etcd has not yet confirmed.
	var registered sync.WaitGroup
	watch := func(cl *clientv3.Client, prefix string) {
		registered.Add(1)
		wch := cl.Watch(clientv3.WithRequireLeader(wctx), prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		wg.Go(func() {
			var local []time.Duration
			created := false
			defer func() {
				if !created {
					registered.Done()
				}
				mu.Lock()
				lats = append(lats, local...)
				mu.Unlock()
			}()
			for r := range wch {
				if r.Created && !created {
					created = true
					registered.Done()
				}
				now := time.Now()
				for _, ev := range r.Events {
					v := ev.Kv.Value
					if i := bytes.IndexByte(v, ' '); i > 0 {
						if ns, err := strconv.ParseInt(string(v[:i]), 10, 64); err == nil {
							local = append(local, now.Sub(time.Unix(0, ns)))
						}
					}
					received.Add(1)
				}
			}
		})
	}
	for i := range filtered {
		watch(clients[i%len(clients)], fmt.Sprintf("/cal/%05d/", i))
	}
	for i := range unfiltered {
		watch(clients[i%len(clients)], "/cal/")
	}
	// The load starts once etcd has confirmed every watch (or a watch has
	// failed, which the missing count then shows).
	if err := waitGroupFor(&registered, 30*time.Second); err != nil {
		return nil, fmt.Errorf("etcd watches: %w", err)
	}
	before, smp := c.Stats(), sample(c)
	lctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	tokens := make(chan time.Time, 1<<16)
	go pace(lctx, rate, tokens)
	var ok, errs atomic.Int64
	putLat := &Latencies{}
	var pw sync.WaitGroup
	start := time.Now()
	for w := range 64 {
		pw.Go(func() {
			var local []time.Duration
			cl := clients[w%len(clients)]
			for i := 0; ; i++ {
				var due time.Time
				select {
				case due = <-tokens:
				case <-lctx.Done():
					putLat.Merge(local)
					return
				}
				n := w + 64*i
				key := fmt.Sprintf("/cal/%05d/%d", n%cals, n)
				val := append([]byte(strconv.FormatInt(due.UnixNano(), 10)+" "), value...)
				if _, err := cl.Put(lctx, key, string(val)); err != nil {
					if lctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				ok.Add(1)
				local = append(local, time.Since(due))
			}
		})
	}
	pw.Wait()
	el := time.Since(start)
	res.Load = LoadResult{Sent: ok.Load() + errs.Load(), OK: ok.Load(), Errors: errs.Load(), Seconds: el.Seconds(), Throughput: float64(ok.Load()) / el.Seconds(), Answer: putLat.Summary()}
	// Every put reaches the one filtered watcher of its prefix (when it has
	// one) and every unfiltered watcher.
	perPut := int64(unfiltered)
	wantRecv := ok.Load() * perPut
	if filtered > 0 {
		wantRecv += ok.Load() * int64(filtered) / int64(cals)
	}
	deadline := time.Now().Add(30 * time.Second)
	for received.Load() < wantRecv && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	res.Server = serverUse(c, before, time.Since(start), smp.done(), ok.Load())
	stopWatch()
	wg.Wait()
	res.Received = received.Load()
	res.Missing = max(0, wantRecv-res.Received)
	res.Latency = Summarize(lats)
	return res, nil
}

// waitGroupFor waits for wg, at most d.
func waitGroupFor(wg *sync.WaitGroup, d time.Duration) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("not done after %s", d)
	}
}

func writePeersMarkdown(b *bytes.Buffer, p *PeersResult) {
	fmt.Fprintf(b, "### Peer: etcd (`make bench-peers`, %s, %s)\n\n", p.Version, p.Started.Format(time.RFC3339))
	if x := p.Put; x != nil {
		cpu := Server{}
		if p.PutCPU != nil {
			cpu = *p.PutCPU
		}
		fmt.Fprintf(b, "| run | ops/s | put answer p50 | p99 | server CPU | peak RSS |\n|---|---|---|---|---|---|\n")
		fmt.Fprintf(b, "| closed-loop put | %.0f | %.2f ms | %.2f ms | %.0f%% | %.1f MB |\n\n", x.Throughput, x.Answer.P50, x.Answer.P99, cpu.CPUPercent, cpu.PeakRSSMB)
	}
	if len(p.Pairs) == 0 {
		return
	}
	f := p.Pairs[0].Etcd
	fmt.Fprintf(b, "calsync's fan-out (webhooks over REST, %d one-calendar + %d unfiltered streams, a tenth and a fifth of them REST NDJSON) and etcd's put → watch (puts over gRPC, the same watchers on key prefixes), %.0f/s for %.0f s each, run back to back on fresh servers; the first of each pair alternates. Sent→received:\n\n",
		f.Filtered, f.Unfiltered, f.Rate, p.Pairs[0].Calsync.Load.Seconds)
	b.WriteString("| pair | first | calsync p50 | p90 | p99 | max | missing / dup / order | CPU | stalled on I/O | etcd p50 | p90 | p99 | max | missing | CPU | stalled on I/O |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i, pr := range p.Pairs {
		c, e := pr.Calsync, pr.Etcd
		fmt.Fprintf(b, "| %d | %s | %.2f ms | %.2f ms | %.2f ms | %.1f ms | %d / %d / %d | %.0f%% | %.0f ms | %.2f ms | %.2f ms | %.2f ms | %.1f ms | %d | %.0f%% | %.0f ms |\n",
			i+1, pr.First, c.Latency.P50, c.Latency.P90, c.Latency.P99, c.Latency.Max, c.Check.Missing, c.Check.Duplicates, c.Check.OrderDisagreements, c.Server.CPUPercent, c.Server.IOStallMs,
			e.Latency.P50, e.Latency.P90, e.Latency.P99, e.Latency.Max, e.Missing, e.Server.CPUPercent, e.Server.IOStallMs)
	}
	cs, es := p.pairedP99s()
	wins := 0
	for i := range cs {
		if cs[i] <= es[i] {
			wins++
		}
	}
	fmt.Fprintf(b, "\ncalsync's p99 was at or below etcd's in **%d of %d** pairs; median p99 calsync %.2f ms, etcd %.2f ms.\n\n", wins, len(cs), median(cs), median(es))
}
