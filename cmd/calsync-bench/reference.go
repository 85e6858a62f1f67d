package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	calsqlite "github.com/calsync/calsync/store/sqlite"
	"github.com/calsync/calsync/store/sqlite/walvfs"
)

// The reference server: what the ingestion scenario's load costs when a
// server does nothing but HTTP and the SQLite rows calsync writes for it.
//
// It shows how much of calsync's CPU per webhook and throughput is the
// engine's and the machine's rather than calsync's own. Per request it runs
// the statements calsync's intake needs on calsync's own schema, in
// transactions that group every waiting request and commit with
// synchronous=FULL before answering, as calsync does, through calsync's
// WAL layer (walvfs: a commit's frames in one write, pages read from a
// memory map), so the two differ only above SQLite. For a postpress
// webhook: the dedupe probe, the stored event's read (to order versions),
// the delivery's INSERT, the event's upsert and the change's INSERT; for a
// Recall hint, the probe and the delivery's INSERT (calsync applies a hint
// later, after asking Recall). It leaves out everything else calsync does:
// signature checks beyond postpress's header, JSON decoding (it picks the
// event's fields out of the body by search), normalization, protobuf
// encoding, the watch streams, metrics, and calsync's commit pipeline (it
// syncs each commit before the next one starts, and SQLite checkpoints in
// the commit that fills the WAL, as it does by default).

// Names of the ingestion scenario's baseline runs in results and reports.
const (
	bareName      = "bare net/http (ceiling)"
	referenceName = "net/http + SQLite's rows alone (reference)"
)

// referenceMaxBatch is the most requests one reference transaction holds,
// as calsync's default batch.
const referenceMaxBatch = 256

// referenceDedupeWindow is how far back a dedupe key is looked for, as
// calsync's default window.
const referenceDedupeWindow = 24 * time.Hour

type referenceRequest struct {
	provider string
	body     []byte
	// done receives whether the delivery was a duplicate, or the error
	// that failed its transaction.
	done chan referenceResult
}

type referenceResult struct {
	duplicate bool
	err       error
}

// referenceServer is the reference server's handler and its committer.
type referenceServer struct {
	db    *sql.DB
	conn  *sql.Conn
	queue chan *referenceRequest
	// done closes when the committer has answered all it was sent.
	done chan struct{}
	// The statements, prepared once on the writer's connection.
	begin, commit, rollback, probe, readEvent, insertDelivery, putEvent, insertChange *sql.Stmt
}

// newReferenceServer creates (or opens) the database at path with calsync's
// schema and starts the committer.
func newReferenceServer(ctx context.Context, path string) (*referenceServer, error) {
	// calsync's own store creates the schema, then lets go of the file.
	st, err := calsqlite.Open(ctx, path, calsqlite.Options{})
	if err != nil {
		return nil, err
	}
	if err := st.Close(); err != nil {
		return nil, err
	}
	if err := walvfs.Register(); err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", "file:"+path+"?vfs="+walvfs.Name+"&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	s := &referenceServer{db: db, queue: make(chan *referenceRequest, 1024), done: make(chan struct{})}
	if s.conn, err = db.Conn(ctx); err != nil {
		db.Close()
		return nil, err
	}
	for _, p := range []struct {
		to *(*sql.Stmt)
		q  string
	}{
		{&s.begin, `BEGIN IMMEDIATE`},
		{&s.commit, `COMMIT`},
		{&s.rollback, `ROLLBACK`},
		{&s.probe, `SELECT 1 FROM deliveries WHERE provider = ? AND dedup_key = ? AND receive_ns >= ? LIMIT 1`},
		{&s.readEvent, `SELECT update_ns FROM events WHERE id = ?`},
		{&s.insertDelivery, `INSERT INTO deliveries (provider, dedup_key, message_id, event_type, ordering_key, body, state, receive_ns, process_ns)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&s.putEvent, `INSERT INTO events (id, calendar_id, provider, start_sec, start_nsec, end_sec, end_nsec, update_ns, deleted, data, raw)
			VALUES (?, ?, ?, ?, 0, ?, 0, ?, 0, ?, ?)
			ON CONFLICT (id) DO UPDATE SET calendar_id = excluded.calendar_id, start_sec = excluded.start_sec,
				end_sec = excluded.end_sec, update_ns = excluded.update_ns, data = excluded.data, raw = excluded.raw`},
		{&s.insertChange, `INSERT INTO changes (type, calendar_id, provider, commit_ns, data) VALUES (?, ?, ?, ?, ?)`},
	} {
		if *p.to, err = s.conn.PrepareContext(ctx, p.q); err != nil {
			s.conn.Close()
			db.Close()
			return nil, fmt.Errorf("reference: prepare %q: %w", p.q, err)
		}
	}
	go s.commitLoop()
	return s, nil
}

// Close stops the committer once the requests queued have been answered,
// and closes the database. No request may be served after Close.
func (s *referenceServer) Close() error {
	close(s.queue)
	<-s.done
	return errors.Join(s.conn.Close(), s.db.Close())
}

func (s *referenceServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		return
	}
	provider, ok := strings.CutPrefix(r.URL.Path, "/v1/webhooks/")
	if !ok || r.Method != http.MethodPost || (provider != "postpress" && provider != "recall") {
		http.NotFound(w, r)
		return
	}
	if provider == "postpress" && r.Header.Get(postpressHeader) != postpressSecret {
		http.Error(w, "bad postpress auth", http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := &referenceRequest{provider: provider, body: body, done: make(chan referenceResult, 1)}
	s.queue <- req
	res := <-req.done
	if res.err != nil {
		http.Error(w, res.err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"duplicate":%t}`, res.duplicate)
}

// commitLoop commits what waits in one transaction, then answers it.
func (s *referenceServer) commitLoop() {
	defer close(s.done)
	batch := make([]*referenceRequest, 0, referenceMaxBatch)
	dup := make([]bool, referenceMaxBatch)
	for req := range s.queue {
		batch = append(batch[:0], req)
	fill:
		for len(batch) < referenceMaxBatch {
			select {
			case r, ok := <-s.queue:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		err := s.commitBatch(batch, dup)
		for i, r := range batch {
			r.done <- referenceResult{duplicate: dup[i] && err == nil, err: err}
		}
		clear(batch)
	}
}

func (s *referenceServer) commitBatch(batch []*referenceRequest, dup []bool) error {
	if _, err := s.begin.Exec(); err != nil {
		return err
	}
	for i, r := range batch {
		var err error
		if dup[i], err = s.write(r); err != nil {
			_, _ = s.rollback.Exec()
			return err
		}
	}
	_, err := s.commit.Exec()
	return err
}

// write runs one request's statements and reports whether it was a
// duplicate.
func (s *referenceServer) write(r *referenceRequest) (bool, error) {
	now := time.Now().UnixNano()
	sum := sha256.Sum256(r.body)
	key := hex.EncodeToString(sum[:])
	var one int
	switch err := s.probe.QueryRow(r.provider, key, now-int64(referenceDedupeWindow)).Scan(&one); {
	case err == nil:
		return true, nil
	case !errors.Is(err, sql.ErrNoRows):
		return false, err
	}
	eventID, calendarID := jsonString(r.body, "id"), jsonString(r.body, "calendar_id")
	state, processed := 1, any(nil) // a Recall hint waits to be processed
	if r.provider == "postpress" {
		state, processed = 2, now
	}
	if _, err := s.insertDelivery.Exec(r.provider, key, eventID, jsonString(r.body, "event"), calendarID, r.body, state, now, processed); err != nil {
		return false, err
	}
	if r.provider != "postpress" {
		return false, nil
	}
	id := "pp_" + eventID
	var stored int64
	if err := s.readEvent.QueryRow(id).Scan(&stored); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, err
	}
	// The stored event and its change are about half the webhook's size
	// in calsync's encoding; the raw payload is the body.
	data := r.body[:len(r.body)/2]
	start := time.Now().Unix()
	if _, err := s.putEvent.Exec(id, calendarID, r.provider, start, start+3600, now, data, r.body); err != nil {
		return false, err
	}
	_, err := s.insertChange.Exec(2, calendarID, r.provider, now, data)
	return false, err
}

// jsonString returns the first string value of key in a JSON body, found
// by search rather than decoding ("" if there is none).
func jsonString(body []byte, key string) string {
	k := []byte(`"` + key + `":"`)
	i := bytes.Index(body, k)
	if i < 0 {
		return ""
	}
	rest := body[i+len(k):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// serveReference runs the reference server on addr with its database at
// path until the process ends.
func serveReference(ctx context.Context, addr, path string) error {
	// The collector runs as calsync's does, not as the tool's own.
	debug.SetGCPercent(100)
	s, err := newReferenceServer(ctx, path)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: addr, Handler: s}
	stopped := make(chan error, 1)
	go func() {
		<-ctx.Done()
		// Handlers must be done before the committer's queue closes.
		stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- srv.Shutdown(stop)
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return errors.Join(<-stopped, s.Close())
}
