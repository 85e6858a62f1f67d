package recall

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Recall allows about one event listing a second per workspace, while a
// workspace may hold thousands of calendars: listed one at a time, the
// hints of a busy workspace would wait minutes for their turn. So the
// incremental listings of several calendars that wait for the listing's
// rate limit at the same time are sent as one listing of the workspace
// (no calendar_id), from the oldest of their updated_at__gte, and each
// page is split among them by calendar.
//
// A merged listing also returns the events of calendars nobody asked
// about, changed since the oldest of the merged watermarks. To keep that
// small, only listings whose updated_at__gte lie within the merge horizon
// of each other are merged: a calendar quiet for days lists alone rather
// than have the workspace's days of changes paged through. Full listings
// (no updated_at__gte) are never merged.

// DefaultListMergeHorizon is how far apart the updated_at__gte of two
// listings may be for them to be merged ([WithListMerging]).
const DefaultListMergeHorizon = 5 * time.Minute

// WithListMerging sets the merge horizon of event listings: listings
// waiting for the rate limit together are merged when their
// updated_at__gte lie within horizon of each other. Zero or less turns
// merging off, so that every listing names its calendar.
func WithListMerging(horizon time.Duration) ClientOption {
	return func(c *Client) { c.lists.horizon = horizon }
}

// listing is one ListEvents call.
type listing struct {
	ctx        context.Context
	calendarID string
	since      time.Time
	fn         func([]Event) error
	before     func()
	// err is the call's outcome once fn failed or its ctx ended: the rest
	// of the listing is no longer its. Only the group's leader sets it.
	err  error
	done chan error // the outcome, for a member that is not the leader
	// stopWatch stops watching ctx for the group once the listing ended.
	stopWatch func() bool
}

// listGroup is listings sent as one: formed while its first member (the
// leader) waits for the rate limit, closed once the limiter lets the
// first request through.
type listGroup struct {
	// ctx is the listing's requests' context: it ends once every
	// member's has.
	ctx    context.Context
	cancel context.CancelFunc
	live   atomic.Int32 // members whose ctx has not ended

	members        []*listing
	oldest, newest time.Time
	closed         bool
}

// listMerger holds the groups being formed.
type listMerger struct {
	horizon time.Duration
	mu      sync.Mutex
	forming []*listGroup
	// joined, if set, is called once a listing has joined a group formed
	// by another (tests wait for it).
	joined func()
}

// join adds l to a group being formed that it fits, or to a new one, and
// reports whether l leads it (and so sends its requests).
func (m *listMerger) join(l *listing) (*listGroup, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range m.forming {
		if g.ctx.Err() == nil && m.fits(g, l.since) {
			g.add(l)
			if m.joined != nil {
				m.joined()
			}
			return g, false
		}
	}
	g := &listGroup{oldest: l.since, newest: l.since}
	g.ctx, g.cancel = context.WithCancel(context.WithoutCancel(l.ctx))
	g.add(l)
	m.forming = append(m.forming, g)
	return g, true
}

// fits reports whether a listing from since may join g.
func (m *listMerger) fits(g *listGroup, since time.Time) bool {
	oldest, newest := g.widened(since)
	return newest.Sub(oldest) <= m.horizon
}

// widened returns g's oldest and newest updated_at__gte with since among
// them.
func (g *listGroup) widened(since time.Time) (oldest, newest time.Time) {
	oldest, newest = g.oldest, g.newest
	if since.Before(oldest) {
		oldest = since
	}
	if since.After(newest) {
		newest = since
	}
	return oldest, newest
}

// add makes l a member of g; the caller holds the merger's lock.
func (g *listGroup) add(l *listing) {
	g.members = append(g.members, l)
	g.oldest, g.newest = g.widened(l.since)
	g.live.Add(1)
	l.stopWatch = context.AfterFunc(l.ctx, func() {
		// No member waits for the requests any more: end them.
		if g.live.Add(-1) == 0 {
			g.cancel()
		}
	})
}

// close takes g out of the groups being formed and returns its members.
func (m *listMerger) close(g *listGroup) []*listing {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !g.closed {
		g.closed = true
		for i, f := range m.forming {
			if f == g {
				m.forming = append(m.forming[:i], m.forming[i+1:]...)
				break
			}
		}
	}
	return g.members
}

// WaitingListings returns how many event listings (one per calendar) wait
// for the listing's rate limit in groups not yet sent; each group goes out
// as one request. Full listings, which are never merged, are not counted.
func (c *Client) WaitingListings() int {
	c.lists.mu.Lock()
	defer c.lists.mu.Unlock()
	n := 0
	for _, g := range c.lists.forming {
		n += len(g.members)
	}
	return n
}

// errNoListener stops a merged listing once every member is done with it.
var errNoListener = errors.New("recall: no listing waits for this one any more")

// listMerged runs the listing of l: alone when merging is off or l is a
// full listing, otherwise in the group it joins. A member that does not
// lead waits for the leader to deliver its pages and its outcome.
func (c *Client) listMerged(l *listing) error {
	if c.lists.horizon <= 0 || l.since.IsZero() {
		return c.listGroup(l.ctx, func() []*listing { return []*listing{l} })
	}
	g, leads := c.lists.join(l)
	if !leads {
		return <-l.done
	}
	defer g.cancel()
	var members []*listing
	err := c.listGroup(g.ctx, func() []*listing {
		if members == nil {
			members = c.lists.close(g)
		}
		return members
	})
	if members == nil {
		// The limiter never let the first request through: every member
		// gets the outcome.
		members = c.lists.close(g)
	}
	for _, m := range members {
		m.stopWatch()
	}
	for _, m := range members[1:] {
		m.done <- outcome(m, err)
	}
	return outcome(members[0], err)
}

// outcome is what a member's ListEvents returns once the listing ended
// with err.
func outcome(l *listing, err error) error {
	switch {
	case l.err != nil:
		return l.err
	case errors.Is(err, errNoListener):
		return nil
	case err != nil && l.ctx.Err() != nil:
		return context.Cause(l.ctx)
	}
	return err
}

// listGroup pages through the listing of the members that take returns
// once the limiter lets the first request through (take closes the group
// the first time), and hands each member the events of its calendar. With
// a single member the listing names its calendar, and fn's error is the
// listing's.
func (c *Client) listGroup(ctx context.Context, take func() []*listing) error {
	first := func() string {
		members := take()
		for _, m := range members {
			if m.before != nil && m.err == nil {
				m.before()
			}
		}
		q := url.Values{}
		if len(members) == 1 {
			q.Set("calendar_id", members[0].calendarID)
		}
		oldest := members[0].since
		for _, m := range members[1:] {
			if m.since.Before(oldest) {
				oldest = m.since
			}
		}
		if !oldest.IsZero() {
			q.Set("updated_at__gte", oldest.UTC().Format(time.RFC3339Nano))
		}
		return c.endpointURL("/api/v2/calendar-events/", q)
	}
	return c.pages(ctx, first, func(page []Event) error {
		members := take()
		if len(members) == 1 {
			return members[0].fn(page)
		}
		live := 0
		for _, m := range members {
			if m.err != nil {
				continue
			}
			if m.ctx.Err() != nil {
				m.err = context.Cause(m.ctx)
				continue
			}
			if mine := eventsOf(page, m.calendarID); len(mine) > 0 {
				m.err = m.fn(mine)
			}
			if m.err == nil {
				live++
			}
		}
		if live == 0 {
			return errNoListener
		}
		return nil
	})
}

// eventsOf returns the events of page on calendarID, in order.
func eventsOf(page []Event, calendarID string) []Event {
	var mine []Event
	for i := range page {
		if page[i].CalendarID == calendarID {
			mine = append(mine, page[i])
		}
	}
	return mine
}
