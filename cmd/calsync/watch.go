package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// watchConfig is what `calsync watch` is configured with; each flag has an
// environment variable: --addr is CALSYNC_ADDR.
type watchConfig struct {
	client           clientConfig
	calendars        string
	providers        string
	types            string
	cursor           string
	cursorFile       string
	snapshot         bool
	includeDeleted   bool
	includePrevious  bool
	jsonOut          bool
	bookmarkInterval time.Duration
}

func (c *watchConfig) register(fs *flag.FlagSet) {
	c.client.register(fs)
	fs.StringVar(&c.client.server, "addr", "127.0.0.1:9090", "the same as --server, kept for existing scripts")
	fs.StringVar(&c.calendars, "calendars", "", "comma-separated calendar ids to keep (default: all)")
	fs.StringVar(&c.providers, "providers", "", "comma-separated providers to keep: recall, postpress (default: all)")
	fs.StringVar(&c.types, "types", "", "comma-separated change types to keep: created, updated, deleted, calendar_updated (default: all)")
	fs.StringVar(&c.cursor, "cursor", "", "resume after this cursor (default: from now, or from --cursor-file)")
	fs.StringVar(&c.cursorFile, "cursor-file", "", "file that keeps the last cursor seen: read at start to resume, rewritten as the stream advances")
	fs.BoolVar(&c.snapshot, "snapshot", false, "start with the current state of every matching event (when there is no cursor to resume from)")
	fs.BoolVar(&c.includeDeleted, "include-deleted", false, "include deleted events in the snapshot")
	fs.BoolVar(&c.includePrevious, "include-previous", false, "include the previous state of updated and deleted events")
	fs.BoolVar(&c.jsonOut, "json", false, "print every response (changes and bookmarks) as one JSON object per line")
	fs.DurationVar(&c.bookmarkInterval, "bookmark-interval", 0, "how often an idle stream gets a bookmark (default: the server's, 15s)")
}

func watchCommand(stdout, stderr io.Writer) *ffcli.Command {
	var cfg watchConfig
	fs := flag.NewFlagSet("calsync watch", flag.ContinueOnError)
	cfg.register(fs)
	return &ffcli.Command{
		Name:       "watch",
		ShortUsage: "calsync watch [flags]",
		ShortHelp:  "print calendar changes as they happen, resumable with --cursor-file",
		LongHelp: "Streams changes from a running calsync over gRPC. It reconnects by itself when the server\n" +
			"restarts, resuming after the last cursor seen, so nothing is missed or printed twice.\n" +
			"Every flag can also be set through the environment: --addr is CALSYNC_ADDR, and so on.",
		FlagSet: fs,
		Options: []ff.Option{ff.WithEnvVarPrefix("CALSYNC")},
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("watch takes no arguments, got %q", args)}
			}
			return watchChanges(ctx, cfg, stdout, stderr)
		},
	}
}

// watchRequest builds the request of a watch that resumes after cursor, or
// starts afresh when cursor is empty.
func (c *watchConfig) watchRequest(cursor string) (*calsyncv1.WatchEventsRequest, error) {
	req := &calsyncv1.WatchEventsRequest{
		AfterCursor:     cursor,
		InitialSnapshot: c.snapshot && cursor == "",
		CalendarIds:     splitList(c.calendars),
		Providers:       splitList(c.providers),
		IncludeDeleted:  c.includeDeleted,
		IncludePrevious: c.includePrevious,
	}
	for _, t := range splitList(c.types) {
		v, ok := calsyncv1.ChangeType_value["CHANGE_TYPE_"+strings.ToUpper(t)]
		if !ok || v == 0 {
			return nil, usageError{fmt.Errorf("--types: unknown change type %q", t)}
		}
		req.ChangeTypes = append(req.ChangeTypes, calsyncv1.ChangeType(v))
	}
	if c.bookmarkInterval > 0 {
		req.BookmarkInterval = durationpb.New(c.bookmarkInterval)
	}
	return req, nil
}

// watchChanges prints changes until ctx is done or the stream fails for a
// reason retrying cannot fix.
func watchChanges(ctx context.Context, cfg watchConfig, stdout, stderr io.Writer) error {
	cursor := cfg.cursor
	if cursor == "" && cfg.cursorFile != "" {
		b, err := os.ReadFile(cfg.cursorFile)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read --cursor-file: %w", err)
		}
		cursor = strings.TrimSpace(string(b))
	}
	if _, err := cfg.watchRequest(cursor); err != nil {
		return err
	}
	conn, err := cfg.client.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := calsyncv1.NewCalendarServiceClient(conn)
	p := &changePrinter{out: stdout, json: cfg.jsonOut, cursorFile: cfg.cursorFile}

	retry := backoff.NewExponentialBackOff()
	retry.MaxInterval = 10 * time.Second
	for {
		req, _ := cfg.watchRequest(cursor)
		progressed, err := p.stream(ctx, client, req, &cursor)
		switch {
		case ctx.Err() != nil:
			return nil
		case status.Code(err) != codes.Unavailable:
			return rpcError(err)
		}
		if progressed {
			retry.Reset()
		}
		wait := retry.NextBackOff()
		fmt.Fprintf(stderr, "calsync watch: %v; reconnecting in %v\n", status.Convert(err).Message(), wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// changePrinter writes a stream's responses and remembers its position.
type changePrinter struct {
	out        io.Writer
	json       bool
	cursorFile string
}

// stream runs one WatchEvents call, updating *cursor as responses arrive.
// progressed says whether anything was received.
func (p *changePrinter) stream(ctx context.Context, client calsyncv1.CalendarServiceClient, req *calsyncv1.WatchEventsRequest, cursor *string) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := client.WatchEvents(ctx, req)
	if err != nil {
		return false, err
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			return progressed, err
		}
		progressed = true
		if err := p.print(resp); err != nil {
			return progressed, err
		}
		// Snapshot changes carry no cursor: the snapshot resumes only from
		// the bookmark that completes it.
		next := resp.GetChange().GetCursor()
		if resp.GetBookmark() != nil {
			next = resp.GetBookmark().GetCursor()
		}
		if next != "" && next != *cursor {
			*cursor = next
			if err := p.saveCursor(next); err != nil {
				return progressed, err
			}
		}
	}
}

var jsonLine = protojson.MarshalOptions{UseProtoNames: true}

func (p *changePrinter) print(resp *calsyncv1.WatchEventsResponse) error {
	if p.json {
		b, err := jsonLine.Marshal(resp)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.out, "%s\n", b)
		return err
	}
	if bm := resp.GetBookmark(); bm != nil {
		if bm.GetSnapshotComplete() {
			_, err := fmt.Fprintln(p.out, "-- snapshot complete; live changes follow")
			return err
		}
		return nil
	}
	c := resp.GetChange()
	kind := strings.TrimPrefix(c.GetType().String(), "CHANGE_TYPE_")
	var err error
	if cal := c.GetCalendar(); cal != nil {
		_, err = fmt.Fprintf(p.out, "%-16s %s %s %s %s\n", kind, cal.GetId(), cal.GetProvider(), cal.GetEmail(), strings.TrimPrefix(cal.GetStatus().String(), "CALENDAR_STATUS_"))
	} else {
		ev := c.GetEvent()
		line := fmt.Sprintf("%-16s %s %s %q", kind, ev.GetStartTime().AsTime().Format(time.RFC3339), ev.GetId(), ev.GetTitle())
		if f := c.GetChangedFields(); len(f) > 0 {
			line += " changed: " + strings.Join(f, ",")
		}
		if u := ev.GetMeetingUrl(); u != "" {
			line += " " + u
		}
		_, err = fmt.Fprintln(p.out, line)
	}
	return err
}

// saveCursor replaces the cursor file atomically, so a crash leaves the
// previous cursor rather than a torn one.
func (p *changePrinter) saveCursor(cursor string) error {
	if p.cursorFile == "" {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(p.cursorFile), ".cursor-*")
	if err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(cursor + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("save cursor: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	if err := os.Rename(tmp.Name(), p.cursorFile); err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	return nil
}
