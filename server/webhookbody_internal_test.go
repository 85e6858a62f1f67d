package server

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
)

// TestWebhookBodyReadOnce: the HTTP intake holds one copy of a webhook's
// body, read once in a buffer of its size; it used to read it twice (the
// size check, then the gateway's decoder), each time growing a buffer
// from 512 bytes, about four copies of every body in garbage.
func TestWebhookBodyReadOnce(t *testing.T) {
	handler := startIntakeBench(t)
	const size = 256 << 10
	body := []byte(`{"event":"calendar_event_updated","title":"` + strings.Repeat("x", size) + `"}`)
	post := func() {
		req := httptest.NewRequest(http.MethodPost, "/v1/webhooks/postpress", bytes.NewReader(body))
		// A wrong secret: the answer is 401 after the body was read and
		// handed to the webhook service, and nothing is stored.
		req.Header.Set(benchPostpressHeader, "wrong")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	post()
	const n = 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		post()
	}
	runtime.ReadMemStats(&after)
	perRequest := float64(after.TotalAlloc-before.TotalAlloc) / n
	if perRequest > 1.5*float64(len(body)) {
		t.Fatalf("%.0f bytes allocated per %d-byte webhook; want at most 1.5 copies of the body", perRequest, len(body))
	}
	t.Logf("%.0f bytes allocated per %d-byte webhook", perRequest, len(body))
}
