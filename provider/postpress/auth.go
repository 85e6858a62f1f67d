// Package postpress authenticates, parses and normalizes postpress calendar
// webhooks. postpress signs nothing: a webhook is trusted when it carries the
// static header configured when the webhook was created, and every webhook
// carries the whole event, so normalization needs no API call.
package postpress

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// ErrUnauthorized is returned by [Authenticator.Verify] when the configured
// header is missing or carries none of the configured secrets.
var ErrUnauthorized = errors.New("postpress: unauthorized")

// Authenticator checks the static header postpress is configured to send
// with every webhook. Several secrets may be configured so one can be
// rotated without downtime.
type Authenticator struct {
	header  string
	digests [][sha256.Size]byte
}

// NewAuthenticator returns an Authenticator that accepts requests whose
// header carries one of secrets. It fails when header or any secret is
// empty, since an empty secret would accept anyone.
func NewAuthenticator(header string, secrets []string) (*Authenticator, error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return nil, errors.New("postpress: authentication header name is empty")
	}
	if len(secrets) == 0 {
		return nil, errors.New("postpress: no secret configured")
	}
	a := &Authenticator{header: http.CanonicalHeaderKey(header)}
	for i, s := range secrets {
		if s == "" {
			return nil, fmt.Errorf("postpress: secret %d is empty", i)
		}
		a.digests = append(a.digests, sha256.Sum256([]byte(s)))
	}
	return a, nil
}

// Header returns the canonical name of the header the Authenticator checks.
func (a *Authenticator) Header() string { return a.header }

// Verify returns nil when h carries one of the configured secrets in the
// configured header, and an error wrapping [ErrUnauthorized] otherwise.
// Both sides are hashed before a constant-time comparison, and every secret
// is compared, so neither the secrets' lengths nor which secret matched
// leak through timing.
func (a *Authenticator) Verify(h http.Header) error {
	values := h.Values(a.header)
	if len(values) == 0 {
		return fmt.Errorf("%w: missing %s header", ErrUnauthorized, a.header)
	}
	if len(values) > 1 {
		return fmt.Errorf("%w: %s header repeated", ErrUnauthorized, a.header)
	}
	got := sha256.Sum256([]byte(values[0]))
	match := 0
	for _, d := range a.digests {
		match |= subtle.ConstantTimeCompare(got[:], d[:])
	}
	if match != 1 {
		return fmt.Errorf("%w: wrong %s header", ErrUnauthorized, a.header)
	}
	return nil
}

// DedupKey returns the hex SHA-256 of a webhook body. postpress sends no
// delivery id, so identical bodies are treated as the same delivery.
func DedupKey(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}
