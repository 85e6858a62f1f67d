package server

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// CORS: browsers on other origins (dashboards, internal tools) may call the
// REST API and open its NDJSON and Server-Sent Events streams when their
// origin is on the allow-list. Webhooks are never covered: providers are not
// browsers, and no page should be able to post a webhook.

// Headers a cross-origin page may send: a bearer token, a JSON body, the
// stream format it accepts, and the cursor an EventSource resumes from.
const (
	corsAllowHeaders = "Authorization, Content-Type, Accept, Last-Event-ID"
	corsAllowMethods = "GET, HEAD, POST, OPTIONS"
	// corsMaxAge lets a browser cache a preflight's answer for ten minutes.
	corsMaxAge = "600"
	// corsExposeHeaders lets a page read why it was refused.
	corsExposeHeaders = "WWW-Authenticate"
)

// ParseCORSOrigins validates an allow-list of origins, each a scheme and a
// host with an optional port ("https://dash.example.com:8443"), and returns
// them in the form browsers send in the Origin header. A wildcard is refused:
// the API serves people's calendars, so every origin is named.
func ParseCORSOrigins(origins []string) ([]string, error) {
	out := make([]string, 0, len(origins))
	for _, o := range origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("CORS origin %q is not an origin: write scheme://host[:port], for example https://dashboard.example.com", o)
		}
		out = append(out, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	return out, nil
}

// corsCovered reports whether a path is part of the API that browsers on
// allowed origins may reach: everything under /v1/ except webhooks.
func corsCovered(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/v1/") && !strings.HasPrefix(r.URL.Path, webhookPrefix)
}

// withCORS answers preflight requests from allowed origins itself (before
// authentication, which a browser's preflight never carries, and before the
// gateway, which knows no OPTIONS), and marks the answers to their actual
// requests as readable by them. Requests from other origins get no CORS
// header at all, so their browser shows the page nothing. With no allowed
// origin it returns next unchanged.
func withCORS(allowed []string, next http.Handler) http.Handler {
	if len(allowed) == 0 {
		return next
	}
	ok := make(map[string]bool, len(allowed))
	for _, o := range allowed {
		ok[o] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !corsCovered(r) {
			next.ServeHTTP(w, r)
			return
		}
		// Answers differ by Origin: caches must not hand one origin's
		// answer to another.
		w.Header().Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		if origin == "" || !ok[strings.ToLower(origin)] {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		// Credentials are the browser's client certificate under mutual
		// TLS; calsync sets no cookie.
		h.Set("Access-Control-Allow-Credentials", "true")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", corsAllowMethods)
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", corsMaxAge)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		next.ServeHTTP(w, r)
	})
}
