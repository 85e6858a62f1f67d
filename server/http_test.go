package server_test

import (
	"net/http"
	"strings"
	"testing"
)

// Webhooks skip the listener's muxes only on paths the muxes would route
// as they are: any other still gets the mux's redirect to its clean form,
// and a clean one reaches the gateway, which knows its providers.
func TestWebhookPathsRouteAsThroughTheMux(t *testing.T) {
	_, _, base := startHTTPServer(t, nil)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(p string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, base+p, strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for p, want := range map[string]string{
		"/v1/webhooks/recall/../postpress": "/v1/webhooks/postpress",
		"/v1/webhooks//postpress":          "/v1/webhooks/postpress",
		"/v1/webhooks/./recall":            "/v1/webhooks/recall",
	} {
		resp := post(p)
		if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != want {
			t.Errorf("POST %s = %d to %q, want %d to %q", p, resp.StatusCode, resp.Header.Get("Location"), http.StatusTemporaryRedirect, want)
		}
	}
	if resp := post("/v1/webhooks/nosuch"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST to an unknown provider = %d, want %d", resp.StatusCode, http.StatusNotFound)
	}
}
