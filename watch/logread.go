package watch

import (
	"context"
	"errors"
	"fmt"

	"github.com/calsync/calsync/store"
)

// logPage is a page of the change log encoded for one stream.
type logPage struct {
	entries []*entry
	// full says the page holds as many changes as were asked for: more
	// probably follow.
	full bool
	err  error
}

// pageAhead is a page being read in the background; done receives it.
type pageAhead struct {
	after store.Cursor
	done  chan logPage
}

// readLog appends the next batch after pos from the change log, for a
// stream that is not within the tail. A compacted position is OUT_OF_RANGE
// when the stream has not moved since it started, RESOURCE_EXHAUSTED once
// it has: it fell behind retention.
//
// After a full page, the next readAheadPages pages are read ahead, on
// goroutines of their own, while the stream sends this one, so that reading
// the store and sending over gRPC overlap during a long catch-up. Cursors
// are gap-free, so a page after the next one is guessed to start where a
// page of logPageChanges would end. A hole in the log makes the guess
// wrong; so would a page cut short by its bytes, so after such a page only
// the next one, whose start is known, is read ahead. A page read ahead is used only if
// the stream asks for exactly its position next; otherwise every page ahead
// is dropped, and each goroutine ends after its one read. A page read ahead
// that came back empty is read again when its turn comes. A stream holds at
// most 1+readAheadPages pages, each within Config.LogPageBytes plus one
// change.
func (s *stream) readLog(ctx context.Context, pos, start store.Cursor, dst []*entry) ([]*entry, error) {
	var p logPage
	if len(s.ahead) > 0 && s.ahead[0].after == pos {
		a := s.ahead[0]
		n := copy(s.ahead, s.ahead[1:])
		s.ahead[n] = nil
		s.ahead = s.ahead[:n]
		select {
		case p = <-a.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if p.err == nil && len(p.entries) == 0 {
			// Read ahead when nothing followed; the log may have grown
			// since. An empty page would look caught up, and the stream
			// would wait for a commit although the log holds more.
			s.ahead = s.ahead[:0]
			p = s.readPage(ctx, pos)
		}
	} else {
		s.ahead = s.ahead[:0]
		p = s.readPage(ctx, pos)
	}
	if p.err != nil {
		s.ahead = s.ahead[:0]
		return nil, s.logError(ctx, p.err, pos, start)
	}
	if !p.full {
		s.ahead = s.ahead[:0]
		return append(dst, p.entries...), nil
	}
	next := p.entries[len(p.entries)-1].cursor
	if len(s.ahead) > 0 && s.ahead[0].after != next {
		s.ahead = s.ahead[:0] // the guess was wrong: a hole, or a page cut by its bytes
	}
	// Guess only after a page that the count ended: after one the bytes
	// ended, the changes are large and the next pages would be cut too.
	depth := readAheadPages
	if len(p.entries) < s.logPageChanges() {
		depth = 1
	}
	if len(s.ahead) > 0 {
		next = s.ahead[len(s.ahead)-1].after + store.Cursor(s.logPageChanges())
	}
	if cap(s.ahead) == 0 {
		s.ahead = make([]*pageAhead, 0, readAheadPages)
	}
	for len(s.ahead) < depth {
		s.ahead = append(s.ahead, s.readAhead(ctx, next))
		next += store.Cursor(s.logPageChanges())
	}
	return append(dst, p.entries...), nil
}

// readAheadPages is how many pages a stream in catch-up reads ahead of the
// one it sends.
const readAheadPages = 2

// logError turns a failed change log read into the stream's error.
func (s *stream) logError(ctx context.Context, err error, pos, start store.Cursor) error {
	h := s.hub
	if !errors.Is(err, store.ErrCompacted) {
		return fmt.Errorf("watch: read the change log: %w", err)
	}
	var oldest string
	if b, err := h.st.ChangeBounds(ctx); err == nil {
		oldest = h.codec.Encode(b.Compacted)
	}
	if pos == start {
		return errCompacted(oldest)
	}
	return errBehind(oldest)
}

// readAhead starts reading the page after after.
func (s *stream) readAhead(ctx context.Context, after store.Cursor) *pageAhead {
	a := &pageAhead{after: after, done: make(chan logPage, 1)}
	go func() { a.done <- s.readPage(ctx, after) }()
	return a
}

// readPage reads and encodes the page after after. It only reads what never
// changes during a stream, so it may run on another goroutine. The page's
// frames are sent only after VisitChangePage returned nil, when the changes
// they carry are durable.
func (s *stream) readPage(ctx context.Context, after store.Cursor) logPage {
	limit, maxBytes := s.logPageChanges(), s.hub.cfg.LogPageBytes
	p := pageFrames{s: s}
	if err := s.hub.st.VisitChangePage(ctx, after, limit, maxBytes, p.add); err != nil {
		return logPage{err: err}
	}
	return logPage{entries: p.out, full: len(p.out) == limit || p.changeBytes >= maxBytes}
}

// logPageChanges is the most changes in a page of the change log: larger
// than a batch from memory, since each page costs a read transaction.
func (s *stream) logPageChanges() int { return 4 * s.hub.cfg.BatchSize }

// pageFrames makes the entries of a change log page read for one stream as
// the store hands its records over, so the page is never copied whole.
// Unlike [newEntry] it encodes only what the stream sends: one frame per
// matching change (the one its include_previous asks for). Frames share
// chunks and entries share blocks, a few allocations a page; both start
// small, as a page near the log's head holds a handful of changes. The run
// loop reads only the filter's fields and the frame.
type pageFrames struct {
	s           *stream
	out         []*entry
	block       []entry // entries are taken from here
	chunk       []byte  // frames are appended here
	changeBytes int     // the Change bytes read, for the page's bound
}

// Sizes of entry blocks (the least and the most) and of frame chunks (a
// page's first, then the others).
const (
	firstEntryBlock, entryBlock = 16, 256
	firstFrameChunk, frameChunk = 8 << 10, 64 << 10
)

// add adds r's entry, and its frame if the stream sends it. r.Change is
// only read here.
func (p *pageFrames) add(r *store.ChangeRecord) error {
	s := p.s
	if len(p.block) == cap(p.block) {
		// Each block as large as the page so far: a page wastes at most
		// half of its entries' room, and a full one a few.
		p.block = make([]entry, 0, min(max(len(p.out), firstEntryBlock), entryBlock))
	}
	p.block = append(p.block, entry{cursor: r.Cursor, typ: r.Type, calendarID: r.CalendarID, provider: r.Provider})
	e := &p.block[len(p.block)-1]
	p.changeBytes += len(r.Change)
	if s.filter.matches(e) {
		prev := 0
		if !s.includePrevious {
			prev = previousSize(r.Change)
		}
		if n := changeFrameSize(len(r.Change) - prev); cap(p.chunk)-len(p.chunk) < n {
			chunk := frameChunk
			if p.chunk == nil {
				chunk = firstFrameChunk
			}
			p.chunk = make([]byte, 0, max(n, chunk))
		}
		start := len(p.chunk)
		p.chunk = appendChangeFrame(p.chunk, r.Change, prev, r.Cursor, s.hub.codec)
		// The capacity ends with the frame, so that nothing appended
		// later can write into it.
		e.full = p.chunk[start:len(p.chunk):len(p.chunk)]
		e.lean = e.full
	}
	p.out = append(p.out, e)
	return nil
}
