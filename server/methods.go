package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"

	"github.com/calsync/calsync/api"
)

// routeMethods knows which HTTP methods each REST route takes, to answer a
// request with the wrong method 405 Method Not Allowed and an Allow header
// (the gateway's default is 501 Not Implemented, which tells a client the
// server lacks the feature altogether).
//
// The routes come from the OpenAPI document generated from the same
// protos as the gateway, and are matched by a gateway ServeMux of their
// own, so a path matches here exactly when it matches the gateway.
type routeMethods struct {
	probe   *runtime.ServeMux
	methods []string
}

// matchedKey marks, in a probe request's context, where the probe mux
// reports that a route matched.
type matchedKey struct{}

func newRouteMethods() (*routeMethods, error) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		return nil, fmt.Errorf("read the OpenAPI document: %w", err)
	}
	rm := &routeMethods{probe: runtime.NewServeMux(
		runtime.WithRoutingErrorHandler(func(context.Context, *runtime.ServeMux, runtime.Marshaler, http.ResponseWriter, *http.Request, int) {}),
		runtime.WithDisablePathLengthFallback(),
	)}
	matched := func(_ http.ResponseWriter, r *http.Request, _ map[string]string) {
		*r.Context().Value(matchedKey{}).(*bool) = true
	}
	seen := map[string]bool{}
	add := func(method, path string) error {
		if !seen[method] {
			seen[method] = true
			rm.methods = append(rm.methods, method)
		}
		return rm.probe.HandlePath(method, path, matched)
	}
	for path, ops := range doc.Paths {
		for op := range ops {
			if err := add(strings.ToUpper(op), path); err != nil {
				return nil, fmt.Errorf("route %s: %w", path, err)
			}
		}
	}
	// The health endpoint is the gateway's own, not an API route.
	if err := add(http.MethodGet, "/healthz"); err != nil {
		return nil, err
	}
	sort.Strings(rm.methods)
	return rm, nil
}

// allowed lists the methods the path of u takes, in a stable order.
func (rm *routeMethods) allowed(u *url.URL) []string {
	var out []string
	for _, m := range rm.methods {
		hit := false
		r, err := http.NewRequestWithContext(context.WithValue(context.Background(), matchedKey{}, &hit), m, "/", nil)
		if err != nil {
			continue
		}
		r.URL = &url.URL{Path: u.Path, RawPath: u.RawPath}
		rm.probe.ServeHTTP(discardWriter{}, r)
		if hit {
			out = append(out, m)
		}
	}
	return out
}

// routingErrorHandler answers requests the gateway has no route for: 405
// with an Allow header when the path exists with other methods, the
// gateway's usual answer otherwise. It is the one place where the method
// of a REST request is judged; anything that answers some method itself
// (a CORS preflight's OPTIONS) must do so before the gateway.
func (rm *routeMethods) routingErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	if httpStatus != http.StatusMethodNotAllowed {
		runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, httpStatus)
		return
	}
	allow := strings.Join(rm.allowed(r.URL), ", ")
	w.Header().Set("Allow", allow)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusMethodNotAllowed)
	fmt.Fprintf(w, `{"code":%d,"message":%q,"details":[]}`+"\n", codes.Unimplemented, "method not allowed: this path takes "+allow)
}

// discardWriter is the probe mux's response writer: probes answer nobody.
type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}
