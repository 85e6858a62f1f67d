package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/sqlite"
)

// TestWriterTrace traces real group commits of a SQLite store and checks
// that the report finds the committer and the WAL's fsyncs.
func TestWriterTrace(t *testing.T) {
	dir := t.TempDir()
	db, err := sqlite.Open(context.Background(), filepath.Join(dir, "w.db"), sqlite.Options{Synchronous: "FULL"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out, err := os.Create(filepath.Join(dir, "trace.out"))
	if err != nil {
		t.Fatal(err)
	}
	if err := trace.Start(out); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 25 {
				_, _, err := db.Enqueue(context.Background(), store.NewDelivery{
					Provider: "postpress", DedupKey: fmt.Sprint(w, "-", i), EventType: "event.updated",
					Body: []byte(`{}`), ReceiveTime: time.Now(),
				})
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	trace.Stop()
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	var report bytes.Buffer
	if err := writerTrace(out.Name(), &report); err != nil {
		t.Fatal(err)
	}
	// The WAL's fsyncs run on the committer or on the syncer's goroutine.
	fsyncs := 0
	for _, m := range regexp.MustCompile(`system call fsync +(\d+) ×`).FindAllStringSubmatch(report.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		fsyncs += n
	}
	if fsyncs < 1 || fsyncs > 200 {
		t.Errorf("%d fsyncs for 200 deliveries in group commits, want 1 to 200:\n%s", fsyncs, report.String())
	}
	// The committer writes the WAL; a goroutine it merely woke does not.
	committer, _, _ := strings.Cut(report.String(), "WAL syncer")
	if !strings.Contains(committer, "system call pwrite") {
		t.Errorf("the committer's part of the report has no write of the WAL; another goroutine was taken for it:\n%s", report.String())
	}
	for _, state := range []string{"Running", "Syscall", "Waiting"} {
		if !bytes.Contains(report.Bytes(), []byte(state)) {
			t.Errorf("no %s in the report:\n%s", state, report.String())
		}
	}
}
