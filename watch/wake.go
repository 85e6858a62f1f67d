package watch

import "github.com/calsync/calsync/store"

// wakers tells waiting streams that a commit may hold changes for them.
//
// A stream filtered to calendars registers a [waiter] under each of its
// calendars and is woken only by commits that touch one of them: with a
// thousand streams each watching its own calendar, a commit wakes one
// stream, not a thousand that would each look through the commit for
// nothing. Every other stream (no calendar filter: providers and change
// types are too coarse to be worth indexing) waits on all, one channel that
// every commit closes, so a commit costs the same with one such stream as
// with ten thousand.
//
// wakers belongs to a [Hub] and is guarded by its lock: commits notify and
// streams register with the write lock held; a stream reads and resets its
// own waiter's pending with the read lock held, which no commit can
// interleave with.
type wakers struct {
	all        chan struct{}
	byCalendar map[string]map[*waiter]struct{}
}

// waiter is how a stream filtered to calendars is woken.
type waiter struct {
	// wake holds one signal, so a commit never blocks on a stream and a
	// signal sent while the stream is busy waits for it.
	wake chan struct{}
	// pending is the cursor of the first change for the stream committed
	// since it last read the tail, or 0 if there was none. It tells the
	// stream where to resume reading without looking at the changes for
	// other calendars in between.
	pending store.Cursor
}

func newWakers() wakers {
	return wakers{all: make(chan struct{}), byCalendar: map[string]map[*waiter]struct{}{}}
}

// register adds a waiter for the given calendars.
func (w *wakers) register(calendars map[string]struct{}) *waiter {
	wt := &waiter{wake: make(chan struct{}, 1)}
	for id := range calendars {
		set := w.byCalendar[id]
		if set == nil {
			set = map[*waiter]struct{}{}
			w.byCalendar[id] = set
		}
		set[wt] = struct{}{}
	}
	return wt
}

// unregister removes a waiter added by register with the same calendars.
func (w *wakers) unregister(wt *waiter, calendars map[string]struct{}) {
	for id := range calendars {
		set := w.byCalendar[id]
		delete(set, wt)
		if len(set) == 0 {
			delete(w.byCalendar, id)
		}
	}
}

// notify wakes the streams entries may concern. entries are newly added to
// the tail, in cursor order.
func (w *wakers) notify(entries []*entry) {
	close(w.all)
	w.all = make(chan struct{})
	if len(w.byCalendar) == 0 {
		return
	}
	prev := ""
	for _, e := range entries {
		if e.calendarID == prev {
			// A commit's changes often share a calendar; its waiters
			// already hold the first one's cursor and a signal.
			continue
		}
		prev = e.calendarID
		for wt := range w.byCalendar[e.calendarID] {
			if wt.pending == 0 {
				wt.pending = e.cursor
			}
			select {
			case wt.wake <- struct{}{}:
			default: // a signal is already waiting
			}
		}
	}
}
