// Package model holds the rules of calsync's normalized model that do not
// depend on any provider or backend: how ids are derived, which fields a
// change touched, and which of two versions of an event wins.
package model

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

// Provider names, as they appear in the API and in webhook routes.
const (
	ProviderRecall    = "recall"
	ProviderPostpress = "postpress"
)

// idEncoding is lower-case base32 without padding: ids stay URL-path safe
// and case-insensitive.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// derive hashes the parts of an identity into an id with the given prefix.
// A NUL separator keeps ("ab","c") and ("a","bc") apart. The hash's input
// is built on the stack for identities of ordinary length and the id is
// written once, so an id costs one allocation: every webhook derives
// several.
func derive(prefix string, parts ...string) string {
	var in [256]byte
	b := in[:0]
	for _, p := range parts {
		b = append(b, p...)
		b = append(b, 0)
	}
	sum := sha256.Sum256(b)
	var out [64]byte
	id := append(out[:0], prefix...)
	n := len(id)
	id = append(id, make([]byte, idEncoding.EncodedLen(idHashBytes))...)
	idEncoding.Encode(id[n:], sum[:idHashBytes])
	return string(id)
}

// idHashBytes is how much of the hash an id keeps: 120 bits.
const idHashBytes = 15

// CalendarID is calsync's id of a provider calendar. accountID is empty for
// providers whose calendar ids are globally unique (Recall).
func CalendarID(provider, accountID, providerCalendarID string) string {
	return derive("cal_", provider, accountID, providerCalendarID)
}

// EventID is calsync's id of a provider event. scope is whatever, with the
// provider event id, makes the identity unique at the provider: empty for
// Recall (event ids are global uuids and survive moves between calendars),
// "account_id/calendar_id" for postpress.
func EventID(provider, scope, providerEventID string) string {
	return derive("evt_", provider, scope, providerEventID)
}

// PostpressScope is the EventID scope of a postpress event.
func PostpressScope(accountID, calendarID string) string {
	return accountID + "/" + calendarID
}

// ValidID reports whether s has the shape of a calsync id with the prefix.
func ValidID(prefix, s string) bool {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok || len(rest) != 24 {
		return false
	}
	_, err := idEncoding.DecodeString(rest)
	return err == nil
}
