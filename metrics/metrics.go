// Package metrics owns calsync's Prometheus collectors: one [Metrics] per
// process, fed through small hooks by the packages that do the work
// (ingestion, the store's group commit, the Recall client, watch streams)
// and served in Prometheus' text format by [Metrics.Handler].
//
// Labels only ever carry bounded, non-secret values: provider names,
// outcomes, endpoint names and HTTP status codes. Tokens, secrets, calendar
// ids and payloads never become a label.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/calsync/calsync/store"
)

const namespace = "calsync"

// Webhook outcomes, the values of the outcome label of
// calsync_webhooks_received_total.
const (
	WebhookAccepted        = "accepted"
	WebhookDuplicate       = "duplicate"
	WebhookUnauthenticated = "unauthenticated"
	WebhookUnknownProvider = "unknown_provider"
	WebhookNotConfigured   = "not_configured"
	WebhookTooLarge        = "too_large"
	// WebhookUnsupportedEncoding is a body in a content coding (gzip...),
	// refused with 415.
	WebhookUnsupportedEncoding = "unsupported_encoding"
	WebhookError               = "error"
)

// Metrics holds every collector of a calsync process in its own registry,
// so tests can run several servers side by side.
type Metrics struct {
	reg *prometheus.Registry

	// GRPC counts and times every gRPC call; its interceptors go first in
	// the server's chain so rejected calls are counted too.
	GRPC *grpcprom.ServerMetrics

	webhooks        *prometheus.CounterVec
	webhookLatency  *prometheus.HistogramVec
	processed       *prometheus.CounterVec
	processing      *prometheus.HistogramVec
	deadLettered    *prometheus.CounterVec
	pruned          *prometheus.CounterVec
	recallRequests  *prometheus.CounterVec
	recallLatency   *prometheus.HistogramVec
	batchSize       prometheus.Histogram
	commitLatency   prometheus.Histogram
	walPages        prometheus.Gauge
	checkpoints     *prometheus.CounterVec
	changesSent     prometheus.Counter
	fallbacks       prometheus.Counter
	streamsEnded    *prometheus.CounterVec
	streamsRejected prometheus.Counter
	authFailures    *prometheus.CounterVec
	tokenReloads    *prometheus.CounterVec

	healthWatchesRejected prometheus.Counter
	leadershipChanges     prometheus.Counter

	// leading, once set by Leader, says whether this replica leads the
	// cluster; nil means it does (one process).
	leadingMu sync.Mutex
	leading   func() bool
}

// New returns a Metrics with every collector registered, Go runtime and
// process collectors included.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		GRPC: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{.001, .005, .01, .05, .1, .5, 1, 5, 30}),
		)),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "webhooks_received_total",
			Help: "Webhook deliveries received, by provider and outcome (accepted, duplicate, unauthenticated, unknown_provider, not_configured, too_large, unsupported_encoding, error).",
		}, []string{"provider", "outcome"}),
		webhookLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "webhook_answer_seconds",
			Help:    "Time from a webhook's body being read to its answer (the inbox commit's fsync included), by provider.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5},
		}, []string{"provider"}),
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "deliveries_processed_total",
			Help: "Deliveries whose processing was attempted, by provider and outcome (done, retry, dead).",
		}, []string{"provider", "outcome"}),
		processing: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "delivery_processing_seconds",
			Help:    "Time one processing attempt of a delivery batch took, Recall API calls included, by provider and outcome.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 30, 120},
		}, []string{"provider", "outcome"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "deliveries_dead_lettered_total",
			Help: "Deliveries dead-lettered by this process, by provider; see calsync_inbox_dead_deliveries for how many are dead now.",
		}, []string{"provider"}),
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "inbox_deliveries_pruned_total",
			Help: "Finished deliveries removed from the inbox after --delivery-retention, by state (done, ignored, dead); dead ones were never retried.",
		}, []string{"state"}),
		recallRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "recall_api_requests_total",
			Help: `Requests to Recall's API, by endpoint and HTTP status ("error" for a network failure); 429s are rate limiting.`,
		}, []string{"endpoint", "status"}),
		recallLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "recall_api_request_seconds",
			Help:    "Duration of requests to Recall's API, by endpoint.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"endpoint"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "inbox_commit_batch_size",
			Help:    "Deliveries committed together in one inbox group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		commitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "inbox_commit_seconds",
			Help:    "Duration of one inbox group commit, fsync included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		walPages: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sqlite_wal_pages",
			Help: "Pages in SQLite's write-ahead log at the last checkpoint (4 KiB each); it starts over once a checkpoint has copied every page.",
		}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sqlite_checkpoints_total",
			Help: "SQLite checkpoints, by mode: passive (beside the writer) or forced (holding the writer lock, because the WAL had grown too long).",
		}, []string{"mode"}),
		changesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "watch_changes_sent_total",
			Help: "Changes sent on watch streams, snapshot changes included; one change sent to ten streams counts ten.",
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "watch_fallbacks_total",
			Help: "Times a watch stream was behind the changes kept in memory and fell back to reading the change log.",
		}),
		streamsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "watch_streams_ended_total",
			Help: "Watch streams that ended, by reason (client, shutdown, behind_retention, cursor_compacted, invalid, unavailable, error).",
		}, []string{"reason"}),
		streamsRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "watch_streams_rejected_total",
			Help: "Watch streams refused because --max-watch-streams were open.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "api_auth_failures_total",
			Help: "API requests refused for lack of valid credentials, by reason (missing_token, invalid_token, no_client_certificate).",
		}, []string{"reason"}),
		tokenReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "api_token_reloads_total",
			Help: "Reloads of --api-tokens-file, by result (ok, error).",
		}, []string{"result"}),
	}
	m.healthWatchesRejected = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "health_watches_rejected_total",
		Help: "gRPC health watches (grpc.health.v1.Health/Watch) refused because --max-health-watches were open.",
	})
	m.leadershipChanges = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "leadership_changes_total",
		Help: "Times this replica became or stopped being the cluster's leader (see calsync_leader).",
	})
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.GRPC, m.webhooks, m.webhookLatency, m.processed, m.processing, m.deadLettered,
		m.recallRequests, m.recallLatency, m.batchSize, m.commitLatency, m.walPages, m.checkpoints,
		m.changesSent, m.fallbacks, m.streamsEnded, m.streamsRejected,
		m.authFailures, m.tokenReloads, m.pruned, m.healthWatchesRejected,
		m.leadershipChanges,
	)
	// Every state shows from the start, so a rate over it is defined
	// before the first pruning.
	for _, state := range []string{"done", "ignored", "dead"} {
		m.pruned.WithLabelValues(state)
	}
	return m
}

// Registry is where the collectors live, for callers that add their own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus' text (or protobuf) format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Webhook counts one received webhook and the time its answer took.
// provider must be a known provider name or "unknown", so a caller cannot
// grow the label set.
func (m *Metrics) Webhook(provider, outcome string, d time.Duration) {
	m.webhooks.WithLabelValues(provider, outcome).Inc()
	m.webhookLatency.WithLabelValues(provider).Observe(d.Seconds())
}

// Processed is [ingest.ProcessorConfig.OnProcessed]: it counts and times
// one processing attempt.
func (m *Metrics) Processed(provider, outcome string, deliveries int, d time.Duration) {
	m.processed.WithLabelValues(provider, outcome).Add(float64(deliveries))
	m.processing.WithLabelValues(provider, outcome).Observe(d.Seconds())
	if outcome == "dead" {
		m.deadLettered.WithLabelValues(provider).Add(float64(deliveries))
	}
}

// InboxPruned is [ingest.PruneConfig.OnPruned]: it counts the deliveries
// one pruning removed, by state.
func (m *Metrics) InboxPruned(p store.PrunedDeliveries) {
	m.pruned.WithLabelValues("done").Add(float64(p.Done))
	m.pruned.WithLabelValues("ignored").Add(float64(p.Ignored))
	m.pruned.WithLabelValues("dead").Add(float64(p.Dead))
}

// RecallRequest is the Recall client's observer (recall.WithObserver): one
// HTTP attempt, status 0 meaning a network error.
func (m *Metrics) RecallRequest(endpoint string, status int, d time.Duration) {
	code := "error"
	if status > 0 {
		code = strconv.Itoa(status)
	}
	m.recallRequests.WithLabelValues(endpoint, code).Inc()
	m.recallLatency.WithLabelValues(endpoint).Observe(d.Seconds())
}

// RecallListingsWaiting exports how many Recall event listings wait for
// the listing's rate limit, read from waiting (recall's
// Client.WaitingListings) at every scrape. Call it once.
func (m *Metrics) RecallListingsWaiting(waiting func() int) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "recall_listings_waiting",
		Help: "Recall calendars whose event listing waits for the listing's rate limit; those waiting together go out as one listing.",
	}, func() float64 { return float64(waiting()) }))
}

// InboxBatch is the store's group-commit hook (sqlite.Options.OnBatch).
func (m *Metrics) InboxBatch(size int, d time.Duration) {
	m.batchSize.Observe(float64(size))
	m.commitLatency.Observe(d.Seconds())
}

// SQLiteCheckpoint is the SQLite store's checkpoint hook
// (sqlite.Options.OnCheckpoint).
func (m *Metrics) SQLiteCheckpoint(walPages, _ int, forced bool) {
	m.walPages.Set(float64(walPages))
	mode := "passive"
	if forced {
		mode = "forced"
	}
	m.checkpoints.WithLabelValues(mode).Inc()
}

// ChangesSent counts changes sent on watch streams.
func (m *Metrics) ChangesSent(n int) { m.changesSent.Add(float64(n)) }

// FellBack counts a watch stream that fell back to reading the change log.
func (m *Metrics) FellBack() { m.fallbacks.Inc() }

// StreamEnded counts a watch stream that ended, with a bounded reason.
func (m *Metrics) StreamEnded(reason string) { m.streamsEnded.WithLabelValues(reason).Inc() }

// StreamRejected counts a watch stream refused by the stream limit.
func (m *Metrics) StreamRejected() { m.streamsRejected.Inc() }

// HealthWatchRejected counts a health watch refused by its limit.
func (m *Metrics) HealthWatchRejected() { m.healthWatchesRejected.Inc() }

// AuthFailure counts a request refused for lack of credentials.
func (m *Metrics) AuthFailure(reason string) { m.authFailures.WithLabelValues(reason).Inc() }

// TokenReload counts a reload of the API token file.
func (m *Metrics) TokenReload(ok bool) {
	result := "ok"
	if !ok {
		result = "error"
	}
	m.tokenReloads.WithLabelValues(result).Inc()
}

// WatchStreams exports how many watch streams are open, read from streams
// at every scrape. Call it once.
func (m *Metrics) WatchStreams(streams func() int) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "watch_streams",
		Help: "Watch streams open now (gRPC and REST).",
	}, func() float64 { return float64(streams()) }))
}

// Inbox exports the inbox's depth, the age of its oldest pending delivery
// and its dead letters, read from the store at every scrape (bounded by a
// short timeout, so a busy database cannot hang a scrape). Call it once.
//
// The inbox is the cluster's, so only the leader reports it (see
// [Metrics.Leader]): followers export none of these gauges, and a sum or
// a max over the replicas is the cluster's figure.
func (m *Metrics) Inbox(inbox store.Inbox, log *slog.Logger) {
	m.reg.MustRegister(&inboxCollector{inbox: inbox, log: log, now: time.Now, leading: m.isLeading})
}

// Leader exports calsync_leader, 1 while this replica leads the cluster
// and 0 otherwise, from leading (cluster.Elector.Leading) read at every
// scrape, and reports the inbox gauges only while it leads. Call it once,
// before serving.
func (m *Metrics) Leader(leading func() bool) {
	m.leadingMu.Lock()
	m.leading = leading
	m.leadingMu.Unlock()
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "leader",
		Help: "1 on the replica that leads the cluster (runs Recall reconciliation, change-log compaction, inbox pruning and reports the inbox gauges), 0 on the others.",
	}, func() float64 {
		if leading() {
			return 1
		}
		return 0
	}))
}

// LeadershipChanged counts a change of leadership
// (cluster.ElectorConfig.OnChange).
func (m *Metrics) LeadershipChanged(bool) { m.leadershipChanges.Inc() }

func (m *Metrics) isLeading() bool {
	m.leadingMu.Lock()
	leading := m.leading
	m.leadingMu.Unlock()
	return leading == nil || leading()
}

var (
	pendingDesc = prometheus.NewDesc(namespace+"_inbox_pending_deliveries",
		"Deliveries waiting to be processed or retried.", nil, nil)
	oldestDesc = prometheus.NewDesc(namespace+"_inbox_oldest_pending_age_seconds",
		"Age of the oldest pending delivery; 0 when none is pending.", nil, nil)
	deadDesc = prometheus.NewDesc(namespace+"_inbox_dead_deliveries",
		"Dead-lettered deliveries in the inbox, waiting for an operator (calsync deliveries list --state dead).", nil, nil)
)

// inboxCollector reads the inbox's summary when scraped rather than
// tracking it, so the numbers are right after a restart too.
type inboxCollector struct {
	inbox   store.Inbox
	log     *slog.Logger
	now     func() time.Time
	leading func() bool
}

func (c *inboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- oldestDesc
	ch <- deadDesc
}

func (c *inboxCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.leading() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.inbox.InboxStats(ctx)
	if err != nil {
		if c.log != nil {
			c.log.Warn("metrics: read inbox stats", "err", err)
		}
		return
	}
	age := 0.0
	if !st.OldestPending.IsZero() {
		age = max(c.now().Sub(st.OldestPending).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age)
	ch <- prometheus.MustNewConstMetric(deadDesc, prometheus.GaugeValue, float64(st.Dead))
}

// WatchMemory exports the memory the changes kept for watch streams take
// (bounded by --watch-memory-bytes), read at every scrape. Call it once.
func (m *Metrics) WatchMemory(bytes func() int64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "watch_memory_bytes",
		Help: "Bytes of the newest changes kept in memory for watch streams (at most --watch-memory-bytes).",
	}, func() float64 { return float64(bytes()) }))
}

// ProcessingQueue exports the deliveries the processor holds in memory,
// queued or in flight, and their bytes (bounded by
// --processing-queue-bytes), read at every scrape. Call it once.
func (m *Metrics) ProcessingQueue(deliveries func() int, bytes func() int64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "processing_queue_deliveries",
		Help: "Deliveries read from the inbox and held in memory, queued or being processed.",
	}, func() float64 { return float64(deliveries()) }), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "processing_queue_bytes",
		Help: "Bytes of the deliveries held in memory for processing (at most --processing-queue-bytes); the rest wait in the inbox.",
	}, func() float64 { return float64(bytes()) }))
}

// WatchLag exports how many changes this process's watchers are behind the
// change log: the log's head, read from the store at every scrape
// (bounded by a short timeout), minus head, the newest change the watch hub
// holds ([watch.Hub.Head]). With replicas on one database, it is how far
// this replica's fan-out trails the other replicas' commits; it should
// stay near 0. Call it once.
func (m *Metrics) WatchLag(changes store.ChangeLog, head func() store.Cursor, log *slog.Logger) {
	m.reg.MustRegister(&lagCollector{changes: changes, head: head, log: log})
}

var lagDesc = prometheus.NewDesc(namespace+"_watch_lag_changes",
	"Changes committed to the change log (by any replica) that this process's watch streams have not been handed yet: the log's head minus the newest change the process holds for its streams.", nil, nil)

// lagCollector reads the change log's head when scraped.
type lagCollector struct {
	changes store.ChangeLog
	head    func() store.Cursor
	log     *slog.Logger
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- lagDesc }

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := c.changes.ChangeBounds(ctx)
	if err != nil {
		if c.log != nil {
			c.log.Warn("metrics: read the change log's bounds", "err", err)
		}
		return
	}
	// A change committed and handed to the hub between the two reads puts
	// the hub ahead of the head read: no lag.
	lag := 0.0
	if h := c.head(); b.Head > h {
		lag = float64(b.Head - h)
	}
	ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, lag)
}
