package server

import (
	"net/http"
	"strings"

	"github.com/calsync/calsync/api"
	"github.com/calsync/calsync/console"
	"github.com/calsync/calsync/metrics"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/watch"
)

// Paths the HTTP listener serves beside the gateway's routes.
const (
	openAPIPath   = "/openapi.json"
	metricsPath   = "/metrics"
	webhookPrefix = "/v1/webhooks/"
	// webhookPath is the webhook route on the gateway (webhookRoute), as
	// calsync.proto's IngestWebhook declares it.
	webhookPath = webhookPrefix + "{provider}"
)

// serveOpenAPI serves the REST API's OpenAPI document, embedded at build
// time, so it always matches the binary's API.
func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(api.OpenAPI)
}

// httpHandler is the HTTP listener's handler: /openapi.json, /metrics
// (unless it has a listener of its own), the console's JSON routes and the
// gateway, behind the API's authentication; the console's static files at
// /ui/, which hold no data and so need none; and CORS for allowed origins
// in front of everything.
func (s *Server) httpHandler(gateway http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(openAPIPath, serveOpenAPI)
	if s.cfg.MetricsAddr == "" {
		mux.Handle(metricsPath, s.metrics.Handler())
	}
	retention := s.cfg.Watch.Retention
	if retention <= 0 {
		retention = watch.DefaultRetention
	}
	ui := &consoleAPI{store: s.deps.Store, metrics: s.metrics, cursors: s.hub.Cursors(), retention: retention, log: s.log}
	ui.register(mux, s.cfg.Limits.RequestTimeout)
	rest := countRefusedWebhooks(s.metrics, limitWebhookBodies(s.cfg.MaxWebhookBytes, gateway))
	mux.Handle("/", rest)
	// Watch streams are served in process (watchHTTP); other methods on
	// their path get the gateway's answer, as before.
	mux.HandleFunc(watchPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			rest.ServeHTTP(w, r)
			return
		}
		s.watchHTTP.ServeHTTP(w, r)
	})

	top := http.NewServeMux()
	top.Handle(console.Path, console.Handler())
	top.Handle("/", s.auth.requireHTTPAuth(true, limitRequestBodies(maxRequestBytes, mux)))
	// Webhooks, most of the listener's requests, go straight to the
	// gateway: on their way through both muxes every layer passes them on
	// unchanged (they are public, limitWebhookBodies bounds their bodies,
	// and "/" routes them), and the muxes' path matching cost 3-5% of a
	// webhook's instructions. Only a path the muxes would take as it is
	// goes straight; any other takes the usual way.
	return withCORS(s.cfg.CORSAllowedOrigins, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isWebhook(r) && cleanWebhookPath(r.URL.Path) {
			rest.ServeHTTP(w, r)
			return
		}
		top.ServeHTTP(w, r)
	}))
}

// cleanWebhookPath reports whether path, under webhookPrefix, is one
// segment that path cleaning leaves as it is, so that a mux would route it
// unchanged rather than redirect it.
func cleanWebhookPath(path string) bool {
	seg, ok := strings.CutPrefix(path, webhookPrefix)
	return ok && seg != "" && seg != "." && seg != ".." && !strings.Contains(seg, "/")
}

// countRefusedWebhooks counts webhooks refused before they reach the gRPC
// service (which counts every other outcome): 413 and 415.
func countRefusedWebhooks(m *metrics.Metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isWebhook(r) {
			next.ServeHTTP(w, r)
			return
		}
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		provider := providerLabel(strings.TrimPrefix(r.URL.Path, webhookPrefix))
		switch rec.code {
		case http.StatusRequestEntityTooLarge:
			m.Webhook(provider, metrics.WebhookTooLarge, 0)
		case http.StatusUnsupportedMediaType:
			m.Webhook(provider, metrics.WebhookUnsupportedEncoding, 0)
		}
	})
}

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// providerLabel bounds the provider label of metrics to known providers:
// a request path must not be able to grow the label set.
func providerLabel(p string) string {
	switch p {
	case model.ProviderRecall, model.ProviderPostpress:
		return p
	}
	return "unknown"
}
