package sqlite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// putEvents commits n events of about 2 KB each, one transaction each.
func putEvents(t *testing.T, db *DB, from, n int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < from+n; i++ {
		if err := db.Update(ctx, func(tx store.Tx) error {
			return tx.PutEvent(ctx, &calsyncv1.CalendarEvent{Id: fmt.Sprintf("evt_%06d", i), CalendarId: "cal_a",
				Provider: "postpress", Title: strings.Repeat("x", 2000)})
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// The writer's commits never checkpoint, whatever the WAL's length: with
// the checkpointer stopped, a WAL well past SQLite's default of 1,000
// pages is still whole (SQLite's own checkpoint would have started it over).
func TestWriterDoesNotCheckpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.db")
	db, err := Open(context.Background(), path, Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.ckpt.stopLoop()

	putEvents(t, db, 0, 1500)
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	const frame = 4096 + 24
	if frames := fi.Size() / frame; frames < 1500 {
		t.Fatalf("WAL holds %d frames after 1,500 commits of a 2 KB event each: the writer checkpointed", frames)
	}
}

// Under writes that never pause, the checkpointer copies the WAL as it
// grows, and once it is longer than its bound finishes a checkpoint under
// the writer lock, after which the WAL starts over.
func TestCheckpointerBoundsTheWAL(t *testing.T) {
	type outcome struct {
		logFrames, copied int
		forced            bool
	}
	seen := make(chan outcome, 1)
	quit := make(chan struct{})
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "b.db"), Options{Synchronous: "NORMAL",
		OnCheckpoint: func(logFrames, copied int, forced bool) {
			select {
			case seen <- outcome{logFrames, copied, forced}:
			case <-quit:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Set before the first write: the write's nudge orders it before the
	// checkpointer's first look.
	db.ckpt.interval = 0
	db.ckpt.force = 200

	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ; i += 20 {
			select {
			case <-stop:
				return
			default:
			}
			putEvents(t, db, i, 20)
		}
	}()
	defer func() {
		close(stop)
		close(quit)
		<-writerDone
	}()

	var forced *outcome
	for n := 0; n < 10000; n++ {
		o := <-seen
		if o.copied > o.logFrames {
			t.Fatalf("checkpoint copied %d of %d frames", o.copied, o.logFrames)
		}
		if forced == nil {
			if o.forced {
				if o.copied != o.logFrames {
					t.Fatalf("checkpoint under the writer lock copied %d of %d frames", o.copied, o.logFrames)
				}
				forced = &o
			}
			continue
		}
		if o.logFrames < forced.logFrames {
			return // the WAL started over
		}
	}
	t.Fatalf("WAL never started over (forced checkpoint: %+v)", forced)
}
