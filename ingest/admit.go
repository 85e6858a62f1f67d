package ingest

import (
	"fmt"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
)

// DefaultMaxClockSkew is how far in the future a provider updated_at may lie
// before its event is refused. A provider's clock and calsync's disagree
// by seconds when both are synchronized; an hour is far beyond that (and
// beyond the 5 minutes Svix's signature check already requires of
// calsync's clock), while it bounds how long a bad updated_at can hold an
// event: a version stamped in the future wins over every real update until
// that moment passes.
const DefaultMaxClockSkew = time.Hour

// admitEvent decides whether a normalized event may be stored. It refuses,
// with the reason:
//   - an event some API encoding cannot carry (see [model.CheckEncodable]):
//     stored, it would fail every reader that lists or watches it;
//   - a provider updated_at more than maxSkew after now: a version from the
//     future would make every later update and delete look older, and be
//     ignored, until that time came. (created_at orders nothing, so a
//     wrong one harms no other version and is kept as sent.)
func admitEvent(ev *calsyncv1.CalendarEvent, now time.Time, maxSkew time.Duration) error {
	if err := model.CheckEncodable(ev); err != nil {
		return fmt.Errorf("event %s refused: %w", ev.GetProviderEventId(), err)
	}
	if u := ev.GetProviderUpdateTime(); u != nil && u.AsTime().After(now.Add(maxSkew)) {
		return fmt.Errorf("event %s refused: provider updated_at %s is more than %s ahead of calsync's clock (%s)",
			ev.GetProviderEventId(), u.AsTime().Format(time.RFC3339Nano), maxSkew, now.UTC().Format(time.RFC3339))
	}
	return nil
}
