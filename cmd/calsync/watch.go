package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"iter"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/calsync/calsync/client"
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
	fs.StringVar(&c.cursorFile, "cursor-file", "", "file that keeps the last cursor seen: read at start to resume; rewritten atomically at most once a second while changes stream, at every bookmark, and on exit")
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

// watchOptions turns the flags into the options of [client.Client.Watch].
func (c *watchConfig) watchOptions() (client.WatchOptions, error) {
	opts := client.WatchOptions{
		CalendarIDs:       splitList(c.calendars),
		Providers:         splitList(c.providers),
		IncludeDeleted:    c.includeDeleted,
		IncludePrevious:   c.includePrevious,
		StartWithSnapshot: c.snapshot,
		BookmarkInterval:  c.bookmarkInterval,
	}
	for _, t := range splitList(c.types) {
		v, ok := calsyncv1.ChangeType_value["CHANGE_TYPE_"+strings.ToUpper(t)]
		if !ok || v == 0 {
			return opts, usageError{fmt.Errorf("--types: unknown change type %q", t)}
		}
		opts.ChangeTypes = append(opts.ChangeTypes, calsyncv1.ChangeType(v))
	}
	return opts, nil
}

// watchChanges prints changes until ctx is done or the watch fails for a
// reason retrying cannot fix. [client.Client.Watch] does the reconnecting,
// resuming and resynchronizing; this prints what it hands over.
func watchChanges(ctx context.Context, cfg watchConfig, stdout, stderr io.Writer) error {
	opts, err := cfg.watchOptions()
	if err != nil {
		return err
	}
	var cursors client.CursorStore = &client.MemoryCursorStore{}
	if cfg.cursorFile != "" {
		cursors = client.NewFileCursorStore(cfg.cursorFile)
	}
	if cfg.cursor != "" {
		cursors = &startAt{cursor: cfg.cursor, CursorStore: cursors}
	}
	start, err := cursors.Load(ctx)
	if err != nil {
		return fmt.Errorf("read --cursor-file: %w", err)
	}
	opts.Cursors = cursors
	// Saving is two fsyncs: once a second keeps a catch-up from waiting on
	// the disk, and a crash repeats at most a second of changes.
	opts.SaveInterval = time.Second
	opts.OnRetry = func(err error, wait time.Duration) {
		fmt.Fprintf(stderr, "calsync watch: %v; reconnecting in %v\n", status.Convert(err).Message(), wait.Round(time.Millisecond))
	}
	c, err := cfg.client.newClient(ctx)
	if err != nil {
		return err
	}
	defer c.Close()

	p := &changePrinter{out: stdout, json: cfg.jsonOut}
	// hasPosition says whether the watch had a place to resume from, so a
	// snapshot is a resync rather than the one --snapshot asked for.
	hasPosition := start != ""
	err = c.Watch(ctx, opts, client.Handler{
		OnChange: func(_ context.Context, ch *calsyncv1.Change) error {
			hasPosition = true
			return p.print(&calsyncv1.WatchEventsResponse{Kind: &calsyncv1.WatchEventsResponse_Change{Change: ch}})
		},
		OnBookmark: func(_ context.Context, bm *calsyncv1.Bookmark) error {
			hasPosition = true
			return p.print(&calsyncv1.WatchEventsResponse{Kind: &calsyncv1.WatchEventsResponse_Bookmark{Bookmark: bm}})
		},
		OnResync: func(_ context.Context, snapshot iter.Seq2[*calsyncv1.CalendarEvent, error]) error {
			if hasPosition {
				fmt.Fprintln(stderr, "calsync watch: the changes since the last cursor are no longer kept; the current state of every matching event follows, then live changes")
			}
			for ev, err := range snapshot {
				if err != nil {
					return err
				}
				created := &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: ev}
				if err := p.print(&calsyncv1.WatchEventsResponse{Kind: &calsyncv1.WatchEventsResponse_Change{Change: created}}); err != nil {
					return err
				}
			}
			return nil
		},
	})
	if err != nil {
		return rpcError(err)
	}
	return nil
}

// startAt is a cursor store that starts from --cursor instead of what the
// store holds, and saves to the store.
type startAt struct {
	cursor string
	client.CursorStore
}

func (s *startAt) Load(context.Context) (string, error) { return s.cursor, nil }

// changePrinter writes what a watch delivers, as text or JSON lines.
type changePrinter struct {
	out  io.Writer
	json bool
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
