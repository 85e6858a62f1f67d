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
	Fanout  *PeerFanout `json:"fanout,omitempty"`
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

// runPeers measures etcd: closed-loop puts over the same number of
// connections as calsync's ingestion, then put → watch at the fan-out rate
// with the fan-out's watchers.
func runPeers(ctx context.Context, p Profile, bin, out, md string) error {
	res := &PeersResult{Command: "calsync-bench " + strings.Join(os.Args[1:], " "), Started: time.Now().UTC(), Machine: machine()}
	if v, err := exec.Command(bin, "--version").Output(); err == nil {
		res.Version = strings.TrimSpace(strings.SplitN(string(v), "\n", 2)[0])
	}
	dir, err := os.MkdirTemp("", "calsync-bench-etcd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c, addr, err := startEtcd(ctx, bin, dir)
	if err != nil {
		return err
	}
	defer c.Stop(10 * time.Second)
	clients := make([]*clientv3.Client, 16)
	for i := range clients {
		if clients[i], err = clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}); err != nil {
			return err
		}
		defer clients[i].Close()
	}
	value := bytes.Repeat([]byte("x"), 700) // about a postpress webhook body

	// Closed-loop puts, one goroutine per "connection" as for calsync.
	before, smp := c.Stats(), sample(c)
	put := closedLoopPuts(ctx, clients, p.Conns, p.Duration, value)
	res.Put = &put
	use := serverUse(c, before, time.Duration(put.Seconds*float64(time.Second)), smp.done(), put.OK)
	res.PutCPU = &use
	log.Printf("etcd put: %.0f/s, p50 %.2f ms p99 %.2f ms", put.Throughput, put.Answer.P50, put.Answer.P99)

	f, err := etcdFanout(ctx, c, clients, p.FanoutRate, p.FilteredStreams, p.UnfilteredStreams, p.Duration, value)
	if err != nil {
		return err
	}
	res.Fanout = f
	log.Printf("etcd put→watch: p50 %.2f ms p99 %.2f ms max %.1f ms, missing %d", f.Latency.P50, f.Latency.P99, f.Latency.Max, f.Missing)
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
	watch := func(cl *clientv3.Client, prefix string) {
		wch := cl.Watch(clientv3.WithRequireLeader(wctx), prefix, clientv3.WithPrefix())
		wg.Go(func() {
			var local []time.Duration
			defer func() { mu.Lock(); lats = append(lats, local...); mu.Unlock() }()
			for r := range wch {
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
	time.Sleep(time.Second) // let every watch register
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

func writePeersMarkdown(b *bytes.Buffer, p *PeersResult) {
	fmt.Fprintf(b, "### Peer: etcd (`make bench-peers`, %s, %s)\n\n", p.Version, p.Started.Format(time.RFC3339))
	fmt.Fprintf(b, "| run | ops/s | put answer p50 | p99 | put→watch p50 | p90 | p99 | max | events received | missing | server CPU | peak RSS |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	if x := p.Put; x != nil {
		cpu := Server{}
		if p.PutCPU != nil {
			cpu = *p.PutCPU
		}
		fmt.Fprintf(b, "| closed-loop put | %.0f | %.2f ms | %.2f ms | | | | | | | %.0f%% | %.1f MB |\n", x.Throughput, x.Answer.P50, x.Answer.P99, cpu.CPUPercent, cpu.PeakRSSMB)
	}
	if f := p.Fanout; f != nil {
		fmt.Fprintf(b, "| put→watch at %.0f/s, %d+%d watchers | %.0f | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.1f ms | %d | %d | %.0f%% | %.1f MB |\n",
			f.Rate, f.Filtered, f.Unfiltered, f.Load.Throughput, f.Load.Answer.P50, f.Load.Answer.P99, f.Latency.P50, f.Latency.P90, f.Latency.P99, f.Latency.Max, f.Received, f.Missing, f.Server.CPUPercent, f.Server.PeakRSSMB)
	}
	b.WriteString("\n")
}
