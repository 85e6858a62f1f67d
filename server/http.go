package server

import (
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"

	"github.com/calsync/calsync/api"
	"github.com/calsync/calsync/model"
)

// Paths the HTTP listener serves beside the gateway's routes.
const (
	openAPIPath   = "/openapi.json"
	metricsPath   = "/metrics"
	webhookPrefix = "/v1/webhooks/"
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
// (unless it has a listener of its own) and the gateway, behind the API's
// authentication.
func (s *Server) httpHandler(gateway *runtime.ServeMux) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(openAPIPath, serveOpenAPI)
	if s.cfg.MetricsAddr == "" {
		mux.Handle(metricsPath, s.metrics.Handler())
	}
	mux.Handle("POST "+webhookPrefix+"{provider}", s.webhooks.httpHandler(gateway))
	mux.Handle("/", watchRequests(gateway))
	return s.auth.requireHTTPAuth(true, mux)
}

// providerLabel bounds the provider label of metrics to known providers:
// a request path must not be able to grow the label set.
func providerLabel(p string) string {
	switch p {
	case model.ProviderRecall, model.ProviderPostpress:
		return p
	}
	return "unknown"
}
