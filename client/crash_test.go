package client_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calsync/calsync/client"
	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/watch"
	"github.com/calsync/calsync/watch/watchtest"
)

// Environment of the watching child process TestWatchCrashChild runs as.
const (
	childAddrEnv   = "CALSYNC_TEST_CHILD_ADDR"
	childCursorEnv = "CALSYNC_TEST_CHILD_CURSOR_FILE"
	childKillEnv   = "CALSYNC_TEST_CHILD_KILL_AFTER"
	childStopEnv   = "CALSYNC_TEST_CHILD_STOP_AFTER"
)

// TestWatchCrashChild is the watching process of
// TestWatchRedeliversAfterCrash when run with its environment, and does
// nothing otherwise. It watches with a file cursor store and prints
// "handled <cursor>" for every change; after the change numbered
// KILL_AFTER it kills itself with SIGKILL inside the handler, after handling
// and before the cursor is saved.
func TestWatchCrashChild(t *testing.T) {
	addr := os.Getenv(childAddrEnv)
	if addr == "" {
		return
	}
	killAfter, _ := strconv.Atoi(os.Getenv(childKillEnv))
	stopAfter, _ := strconv.Atoi(os.Getenv(childStopEnv))
	c, err := client.New(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	handled := 0
	err = c.Watch(ctx, client.WatchOptions{Cursors: client.NewFileCursorStore(os.Getenv(childCursorEnv))}, client.Handler{
		OnChange: func(_ context.Context, ch *calsyncv1.Change) error {
			fmt.Fprintf(os.Stdout, "handled %s\n", ch.GetCursor())
			handled++
			if handled == killAfter {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal ends the process
			}
			if handled == stopAfter {
				cancel()
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// runChild runs the watching child to the end and returns the cursors it
// handled and how it ended.
func runChild(t *testing.T, addr, cursorFile string, env ...string) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestWatchCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), append(env, childAddrEnv+"="+addr, childCursorEnv+"="+cursorFile)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var handled []string
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if cur, ok := strings.CutPrefix(sc.Text(), "handled "); ok {
			handled = append(handled, cur)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("the child did not finish: %s%s", stdout.String(), stderr.String())
	}
	return handled, err
}

// TestWatchRedeliversAfterCrash kills a watching process between handling a
// change and recording its cursor: the next process on the same cursor
// file gets that change again (at least once) and skips none.
func TestWatchRedeliversAfterCrash(t *testing.T) {
	ts := startServer(t)
	st := ts.Store()
	cal := watchtest.CalendarID(model.ProviderPostpress, 1)
	var changes []*calsyncv1.Change
	for n := range 6 {
		changes = append(changes, watchtest.Created(watchtest.Event(model.ProviderPostpress, cal, n, "standup")))
	}
	log := watchtest.Commit(t, st, changes...)
	cursorFile := filepath.Join(t.TempDir(), "watch.cursor")
	if err := client.NewFileCursorStore(cursorFile).Save(context.Background(), watch.NewCursorCodec(st.ID()).Encode(0)); err != nil {
		t.Fatal(err)
	}
	decode := func(cs []string) []store.Cursor {
		var out []store.Cursor
		for _, c := range cs {
			out = append(out, watchtest.Decode(t, st, c))
		}
		return out
	}

	first, err := runChild(t, ts.grpcAddr, cursorFile, childKillEnv+"=3")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the first child ended with %v, want SIGKILL", err)
	}
	if got := decode(first); fmt.Sprint(got) != fmt.Sprint(log[:3]) {
		t.Fatalf("the first child handled %v, want %v", got, log[:3])
	}
	saved, _ := client.NewFileCursorStore(cursorFile).Load(context.Background())
	if watchtest.Decode(t, st, saved) != log[1] {
		t.Fatalf("the cursor file holds %d, want %d: the last recorded change before the kill", watchtest.Decode(t, st, saved), log[1])
	}

	second, err := runChild(t, ts.grpcAddr, cursorFile, childStopEnv+"=4")
	if err != nil {
		t.Fatalf("the second child: %v", err)
	}
	if got := decode(second); fmt.Sprint(got) != fmt.Sprint(log[2:]) {
		t.Fatalf("the second child handled %v, want %v: the change handled but not recorded, then the rest", got, log[2:])
	}
}
