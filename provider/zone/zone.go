// Package zone loads IANA time zones for the provider normalizers. Loading
// a zone reads and parses the zoneinfo database on every call, which is a
// visible share of normalizing an event, so loaded zones are kept.
package zone

import (
	"fmt"
	"sync"
	"time"
	_ "time/tzdata" // zones must resolve on machines without a zoneinfo database
)

// loaded holds every zone loaded so far, by name. There are a few hundred
// zones, so it stays small; names that fail are not kept, so bad input
// cannot grow it.
var loaded sync.Map

// Load returns the IANA zone name, refusing the names time.LoadLocation
// accepts that are not zones ("" and "Local").
func Load(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("invalid time zone %q", name)
	}
	if loc, ok := loaded.Load(name); ok {
		return loc.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q", name)
	}
	loaded.Store(name, loc)
	return loc, nil
}
