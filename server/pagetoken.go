package server

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
)

// pageToken is what a next_page_token carries: where the next page starts,
// and a hash of the request's filters so a token cannot be replayed with
// other filters (that would silently skip or repeat items).
type pageToken struct {
	Filter string `json:"f"`
	// AfterID and AfterStart are the keyset position of the last item
	// returned. The start is unix seconds and nanoseconds: a count of
	// nanoseconds in 64 bits holds only 1677 to 2262, and events lie
	// anywhere from year 1 to 9999.
	AfterID           string `json:"i,omitempty"`
	AfterStartSeconds int64  `json:"ss,omitempty"`
	AfterStartNanos   int32  `json:"sn,omitempty"`
	AfterNum          int64  `json:"n,omitempty"`
}

// filterHash summarizes the filter fields of a list request.
func filterHash(kind string, parts ...string) string {
	h := sha256.New()
	h.Write([]byte(kind))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func encodePageToken(t pageToken) string {
	b, _ := json.Marshal(t) // a struct of strings and ints always marshals
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodePageToken parses a page token made for the same filters. An empty
// token is the first page.
func decodePageToken(s, filter string) (pageToken, error) {
	var t pageToken
	if s == "" {
		return t, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || json.Unmarshal(b, &t) != nil {
		return pageToken{}, invalidArgument("page_token is malformed")
	}
	if t.Filter != filter {
		return pageToken{}, invalidArgument("page_token was issued for a request with other filters")
	}
	return t, nil
}

// Page sizes of the list calls.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// pageSize turns a requested page size into the number of items to return.
func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, invalidArgument("page_size must not be negative")
	case n == 0:
		return defaultPageSize, nil
	case n > maxPageSize:
		return maxPageSize, nil
	}
	return int(n), nil
}

// afterStart returns the start time of a token's keyset position.
func (t pageToken) afterStart() time.Time {
	return time.Unix(t.AfterStartSeconds, int64(t.AfterStartNanos)).UTC()
}
