package server

import (
	"path"
	"testing"
)

// A webhook path goes straight to the gateway only when the muxes would
// have routed it as it is: path cleaning must leave it unchanged.
func TestCleanWebhookPath(t *testing.T) {
	for _, c := range []struct {
		path string
		want bool
	}{
		{"/v1/webhooks/postpress", true},
		{"/v1/webhooks/recall", true},
		{"/v1/webhooks/no-such_provider.x", true},
		{"/v1/webhooks/", false},
		{"/v1/webhooks/.", false},
		{"/v1/webhooks/..", false},
		{"/v1/webhooks/postpress/", false},
		{"/v1/webhooks//postpress", false},
		{"/v1/webhooks/../calendars", false},
		{"/v1/webhooks/postpress/../recall", false},
		{"/v1/webhooks/./postpress", false},
		{"/v1/webhook/postpress", false},
		{"/v1/calendars", false},
	} {
		got := cleanWebhookPath(c.path)
		if got != c.want {
			t.Errorf("cleanWebhookPath(%q) = %v, want %v", c.path, got, c.want)
		}
		if got && path.Clean(c.path) != c.path {
			t.Errorf("cleanWebhookPath(%q) = true, but cleaning makes it %q", c.path, path.Clean(c.path))
		}
	}
}
