package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/server"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/watch"
	"github.com/calsync/calsync/watch/watchtest"
)

// mustServeStore runs a calsync server over a fresh store of be and
// returns its gRPC address and the store, which the test writes changes to.
func mustServeStore(t *testing.T, be backend) (string, store.Store) {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db := be.open(t)
	srv, err := server.New(server.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, server.Deps{
		Store: db, Logger: log,
		Receiver:  ingest.NewReceiver(db, ingest.ReceiverConfig{}),
		Processor: ingest.NewProcessor(db, ingest.ProcessorConfig{Logger: log}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(ctx) })
	return srv.GRPCAddr(), db
}

// cliWatch runs `calsync watch args...` until stop is called; lines yields
// what it prints.
func cliWatch(t *testing.T, args ...string) (lines *bufio.Scanner, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		c := run(ctx, append([]string{"watch"}, args...), pw, io.Discard)
		pw.Close()
		code <- c
	}()
	var once bool
	var exit int
	stop = func() int {
		if !once {
			once = true
			cancel()
			go io.Copy(io.Discard, pr)
			exit = <-code
		}
		return exit
	}
	t.Cleanup(func() { stop() })
	return bufio.NewScanner(pr), stop
}

func TestWatchCLI(t *testing.T) { onBackends(t, testWatchCLI) }

func testWatchCLI(t *testing.T, be backend) {
	addr, st := mustServeStore(t, be)
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	commit := func(from, n int) []store.Cursor {
		var cs []*calsyncv1.Change
		for i := from; i < from+n; i++ {
			cs = append(cs, watchtest.Created(watchtest.Event(model.ProviderPostpress, cal, i, "standup")))
		}
		return watchtest.Commit(t, st, cs...)
	}
	type line struct {
		Change *struct {
			Cursor string
			Type   string
			Event  struct{ Title string }
		}
		Bookmark *struct{ Cursor string }
	}
	// next decodes the next JSON line, failing if the CLI prints nothing
	// within 10s.
	next := func(t *testing.T, lines *bufio.Scanner) line {
		t.Helper()
		got := make(chan bool, 1)
		go func() { got <- lines.Scan() }()
		select {
		case ok := <-got:
			if !ok {
				t.Fatalf("calsync watch stopped printing: %v", lines.Err())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("calsync watch printed nothing for 10s")
		}
		var l line
		if err := json.Unmarshal(lines.Bytes(), &l); err != nil {
			t.Fatalf("not one JSON object per line: %q: %v", lines.Text(), err)
		}
		return l
	}
	cursorFile := filepath.Join(t.TempDir(), "cursor")

	lines, stop := cliWatch(t, "--addr", addr, "--json", "--cursor-file", cursorFile, "--types", "created")
	start := next(t, lines)
	if start.Bookmark == nil {
		t.Fatalf("first line %+v, want a bookmark", start)
	}
	first := commit(0, 3)
	var got []store.Cursor
	for len(got) < 3 {
		l := next(t, lines)
		if l.Change != nil {
			if l.Change.Type != "CHANGE_TYPE_CREATED" || l.Change.Event.Title != "standup" {
				t.Errorf("change %+v", l.Change)
			}
			got = append(got, watchtest.Decode(t, st, l.Change.Cursor))
		}
	}
	if code := stop(); code != 0 {
		t.Fatalf("calsync watch exited with %d after an interrupt, want 0", code)
	}
	saved, err := os.ReadFile(cursorFile)
	if err != nil || watchtest.Decode(t, st, strings.TrimSpace(string(saved))) != first[2] {
		t.Fatalf("cursor file holds %q (%v), want the cursor of change %d", saved, err, first[2])
	}

	// Changes committed while the CLI was not running are printed by the
	// next run, which resumes from the cursor file.
	second := commit(3, 4)
	lines, stop = cliWatch(t, "--addr", addr, "--json", "--cursor-file", cursorFile)
	for got[len(got)-1] < second[len(second)-1] {
		if l := next(t, lines); l.Change != nil {
			got = append(got, watchtest.Decode(t, st, l.Change.Cursor))
		}
	}
	stop()
	watchtest.CheckStream(t, "cli", watchtest.Log(t, st, watchtest.Decode(t, st, start.Bookmark.Cursor)), nil, got)

	t.Run("Human", func(t *testing.T) {
		lines, stop := cliWatch(t, "--addr", addr, "--snapshot")
		if !lines.Scan() || !strings.HasPrefix(lines.Text(), "CREATED") || !strings.Contains(lines.Text(), `"standup"`) {
			t.Fatalf("first line %q, want a CREATED event", lines.Text())
		}
		stop()
	})
	t.Run("ErrBadType", func(t *testing.T) {
		if code := run(context.Background(), []string{"watch", "--addr", addr, "--types", "moved"}, io.Discard, io.Discard); code != 2 {
			t.Fatalf("exit code %d, want 2", code)
		}
	})
}

// TestWatchCLIResync: a --cursor-file whose cursor was compacted away makes
// calsync watch print the current state, then go on live, instead of
// failing; a cursor of another database is an error, never a restart from
// now.
func TestWatchCLIResync(t *testing.T) { onBackends(t, testWatchCLIResync) }

func testWatchCLIResync(t *testing.T, be backend) {
	addr, st := mustServeStore(t, be)
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	ev := func(n int) *calsyncv1.CalendarEvent {
		return watchtest.Event(model.ProviderPostpress, cal, n, "standup")
	}
	old := watchtest.Commit(t, st, watchtest.Created(ev(0)), watchtest.Created(ev(1)))
	watchtest.Commit(t, st, watchtest.Deleted(ev(0)), watchtest.Created(ev(2)))
	if _, err := st.CompactChanges(context.Background(), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	cursorFile := filepath.Join(t.TempDir(), "cursor")
	codec := watch.NewCursorCodec(st.ID())
	if err := os.WriteFile(cursorFile, []byte(codec.Encode(old[0])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	lines, stop := cliWatch(t, "--addr", addr, "--json", "--cursor-file", cursorFile)
	var snapshot []string
	var complete string
	for complete == "" {
		if !lines.Scan() {
			t.Fatalf("calsync watch stopped: %v", lines.Err())
		}
		var l struct {
			Change *struct {
				Cursor string
				Event  struct{ Id string }
			}
			Bookmark *struct {
				Cursor           string
				SnapshotComplete bool `json:"snapshot_complete"`
			}
		}
		if err := json.Unmarshal(lines.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		switch {
		case l.Change != nil && l.Change.Cursor == "":
			snapshot = append(snapshot, l.Change.Event.Id)
		case l.Bookmark != nil && l.Bookmark.SnapshotComplete:
			complete = l.Bookmark.Cursor
		default:
			t.Fatalf("line %s before the snapshot completed", lines.Text())
		}
	}
	if want := []string{ev(1).GetId(), ev(2).GetId()}; fmt.Sprint(snapshot) != fmt.Sprint(want) {
		t.Errorf("the resync printed %v, want the live events %v", snapshot, want)
	}
	eventually(t, "the cursor file to hold the snapshot's cursor", func() bool {
		b, _ := os.ReadFile(cursorFile)
		return strings.TrimSpace(string(b)) == complete
	})
	stop()

	var stderr bytes.Buffer
	foreign := watch.NewCursorCodec("another database").Encode(1)
	if code := run(context.Background(), []string{"watch", "--addr", addr, "--cursor", foreign}, io.Discard, &stderr); code != 1 {
		t.Fatalf("exit code %d with a foreign cursor, want 1", code)
	}
	if !strings.Contains(stderr.String(), "INVALID_ARGUMENT") || !strings.Contains(stderr.String(), "another calsync store") {
		t.Errorf("stderr %q, want the INVALID_ARGUMENT that names the foreign cursor", stderr.String())
	}
}
