package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// clientEnv is the LongHelp line every client command shares.
const clientEnv = "Every flag can also be set through the environment: --server is CALSYNC_SERVER, --token is CALSYNC_TOKEN, and so on.\n" +
	"--json prints one JSON object per line (for lists, one per item), with the API's field names."

// clientCommand is a leaf subcommand that calls the API once: its flags
// are the connection flags, --json, and whatever addFlags adds.
type clientCommand struct {
	name, usage, help string
	// args is how many positional arguments it takes.
	args     int
	addFlags func(fs *flag.FlagSet)
	// call does the work over conn and prints to out.
	call func(ctx context.Context, conn *grpc.ClientConn, args []string, p printer) error
}

// printer writes results as tables or JSON lines.
type printer struct {
	out  io.Writer
	json bool
}

func (c clientCommand) build(parent string, stdout io.Writer) *ffcli.Command {
	var (
		cc      clientConfig
		jsonOut bool
	)
	fs := flag.NewFlagSet("calsync "+parent+" "+c.name, flag.ContinueOnError)
	cc.register(fs)
	fs.BoolVar(&jsonOut, "json", false, "print JSON, one object per line")
	if c.addFlags != nil {
		c.addFlags(fs)
	}
	name := strings.TrimSpace(parent + " " + c.name)
	return &ffcli.Command{
		Name:       c.name,
		ShortUsage: "calsync " + name + " " + c.usage,
		ShortHelp:  c.help,
		LongHelp:   clientEnv,
		FlagSet:    fs,
		Options:    []ff.Option{ff.WithEnvVarPrefix("CALSYNC")},
		Exec: func(ctx context.Context, args []string) error {
			// Flags may follow the arguments too: `calendars get ID --json`.
			var positional []string
			for len(args) > 0 {
				if strings.HasPrefix(args[0], "-") && args[0] != "-" {
					if err := fs.Parse(args); err != nil {
						return usageError{err}
					}
					args = fs.Args()
					continue
				}
				positional, args = append(positional, args[0]), args[1:]
			}
			args = positional
			if len(args) != c.args {
				return usageError{fmt.Errorf("%s takes %d argument(s) (%s), got %d", name, c.args, c.usage, len(args))}
			}
			conn, err := cc.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := cc.callContext(ctx)
			defer cancel()
			return c.call(ctx, conn, args, printer{out: stdout, json: jsonOut})
		},
	}
}

// group is a command that only holds subcommands (calendars, events, ...).
func group(name, help string, stderr io.Writer, subs ...*ffcli.Command) *ffcli.Command {
	cmd := &ffcli.Command{
		Name:        name,
		ShortUsage:  "calsync " + name + " <subcommand> [flags]",
		ShortHelp:   help,
		FlagSet:     flag.NewFlagSet("calsync "+name, flag.ContinueOnError),
		Subcommands: subs,
	}
	cmd.Exec = func(context.Context, []string) error {
		fmt.Fprintln(stderr, ffcli.DefaultUsageFunc(cmd))
		return usageError{fmt.Errorf("%s needs a subcommand", name)}
	}
	return cmd
}

// timeFlag is a flag holding an RFC 3339 instant.
type timeFlag struct{ t *timestamppb.Timestamp }

func (f *timeFlag) String() string {
	if f == nil || f.t == nil {
		return ""
	}
	return f.t.AsTime().Format(time.RFC3339)
}

func (f *timeFlag) Set(s string) error {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return fmt.Errorf("want an RFC 3339 time such as 2026-01-02T15:04:05Z")
	}
	f.t = timestamppb.New(t)
	return nil
}

// pageLimit is the flag every list command shares: how many items to print
// in all, fetched page by page.
func pageLimit(fs *flag.FlagSet, limit *int) {
	fs.IntVar(limit, "limit", 100, "most items to print, fetched page by page (0: all)")
}

// pageSize is the page to ask for when limit items are wanted in all.
func pageSize(limit, printed int) int32 {
	if limit <= 0 {
		return 1000
	}
	return int32(min(limit-printed, 1000))
}

func calendarsCommand(stdout, stderr io.Writer) *ffcli.Command {
	var (
		provider, providerID string
		limit                int
	)
	list := clientCommand{
		name: "list", usage: "[flags]", help: "list calendars",
		addFlags: func(fs *flag.FlagSet) {
			fs.StringVar(&provider, "provider", "", "keep only calendars of this provider: recall, postpress")
			fs.StringVar(&providerID, "provider-calendar-id", "", "keep only the calendar with this provider id")
			pageLimit(fs, &limit)
		},
		call: func(ctx context.Context, conn *grpc.ClientConn, _ []string, p printer) error {
			client := calsyncv1.NewCalendarServiceClient(conn)
			t := p.table("ID", "PROVIDER", "EMAIL", "STATUS", "PROVIDER ID", "UPDATED")
			printed, token := 0, ""
			for {
				resp, err := client.ListCalendars(ctx, &calsyncv1.ListCalendarsRequest{
					Provider: provider, ProviderCalendarId: providerID, PageToken: token, PageSize: pageSize(limit, printed),
				})
				if err != nil {
					return rpcError(err)
				}
				for _, c := range resp.GetCalendars() {
					if err := p.row(t, c, calendarRow(c)...); err != nil {
						return err
					}
					printed++
				}
				if token = resp.GetNextPageToken(); token == "" || (limit > 0 && printed >= limit) {
					return t.Flush()
				}
			}
		},
	}
	get := clientCommand{
		name: "get", usage: "CALENDAR_ID", help: "show one calendar", args: 1,
		call: func(ctx context.Context, conn *grpc.ClientConn, args []string, p printer) error {
			resp, err := calsyncv1.NewCalendarServiceClient(conn).GetCalendar(ctx, &calsyncv1.GetCalendarRequest{CalendarId: args[0]})
			if err != nil {
				return rpcError(err)
			}
			c := resp.GetCalendar()
			return p.record(c, [][2]string{
				{"id", c.GetId()}, {"provider", c.GetProvider()}, {"provider calendar id", c.GetProviderCalendarId()},
				{"platform", c.GetPlatform()}, {"email", c.GetEmail()}, {"status", enumName(c.GetStatus().String(), "CALENDAR_STATUS_")},
				{"updated", timeText(c.GetUpdateTime())},
			})
		},
	}
	return group("calendars", "list and show calendars", stderr, list.build("calendars", stdout), get.build("calendars", stdout))
}

func calendarRow(c *calsyncv1.Calendar) []string {
	return []string{c.GetId(), c.GetProvider(), c.GetEmail(), enumName(c.GetStatus().String(), "CALENDAR_STATUS_"), c.GetProviderCalendarId(), timeText(c.GetUpdateTime())}
}

func eventsCommand(stdout, stderr io.Writer) *ffcli.Command {
	var (
		calendar                string
		from, to, since         timeFlag
		includeDeleted, withRaw bool
		limit                   int
	)
	list := clientCommand{
		name: "list", usage: "[flags]", help: "list events by start time, optionally in a time range or changed since an instant",
		addFlags: func(fs *flag.FlagSet) {
			fs.StringVar(&calendar, "calendar", "-", `calendar id, or "-" for every calendar`)
			fs.Var(&from, "from", "keep events that end after this RFC 3339 time")
			fs.Var(&to, "to", "keep events that start before this RFC 3339 time")
			fs.Var(&since, "updated-since", "keep events calsync changed at or after this RFC 3339 time")
			fs.BoolVar(&includeDeleted, "include-deleted", false, "include deleted events (tombstones)")
			pageLimit(fs, &limit)
		},
		call: func(ctx context.Context, conn *grpc.ClientConn, _ []string, p printer) error {
			client := calsyncv1.NewCalendarServiceClient(conn)
			t := p.table("START", "END", "ID", "TITLE", "STATUS", "MEETING")
			printed, token := 0, ""
			for {
				resp, err := client.ListEvents(ctx, &calsyncv1.ListEventsRequest{
					CalendarId: calendar, StartTime: from.t, EndTime: to.t, UpdatedSince: since.t,
					IncludeDeleted: includeDeleted, PageToken: token, PageSize: pageSize(limit, printed),
				})
				if err != nil {
					return rpcError(err)
				}
				for _, e := range resp.GetEvents() {
					if err := p.row(t, e, eventRow(e)...); err != nil {
						return err
					}
					printed++
				}
				if token = resp.GetNextPageToken(); token == "" || (limit > 0 && printed >= limit) {
					return t.Flush()
				}
			}
		},
	}
	get := clientCommand{
		name: "get", usage: "CALENDAR_ID EVENT_ID", help: "show one event", args: 2,
		addFlags: func(fs *flag.FlagSet) {
			fs.BoolVar(&withRaw, "raw", false, "include the provider's raw payload (with --json)")
		},
		call: func(ctx context.Context, conn *grpc.ClientConn, args []string, p printer) error {
			resp, err := calsyncv1.NewCalendarServiceClient(conn).GetEvent(ctx, &calsyncv1.GetEventRequest{CalendarId: args[0], EventId: args[1], IncludeRaw: withRaw})
			if err != nil {
				return rpcError(err)
			}
			e := resp.GetEvent()
			var attendees []string
			for _, a := range e.GetAttendees() {
				attendees = append(attendees, a.GetEmail())
			}
			return p.record(e, [][2]string{
				{"id", e.GetId()}, {"calendar", e.GetCalendarId()}, {"provider", e.GetProvider()},
				{"title", e.GetTitle()}, {"start", eventTime(e.GetStartTime(), e.GetStartDate())}, {"end", eventTime(e.GetEndTime(), e.GetEndDate())},
				{"time zone", e.GetTimeZone()}, {"status", enumName(e.GetStatus().String(), "EVENT_STATUS_")},
				{"location", e.GetLocation()}, {"meeting", e.GetMeetingUrl()}, {"organizer", e.GetOrganizer().GetEmail()},
				{"attendees", strings.Join(attendees, ", ")}, {"updated", timeText(e.GetUpdateTime())},
			})
		},
	}
	return group("events", "list and show events", stderr, list.build("events", stdout), get.build("events", stdout))
}

func eventRow(e *calsyncv1.CalendarEvent) []string {
	return []string{eventTime(e.GetStartTime(), e.GetStartDate()), eventTime(e.GetEndTime(), e.GetEndDate()), e.GetId(), e.GetTitle(),
		enumName(e.GetStatus().String(), "EVENT_STATUS_"), e.GetMeetingUrl()}
}

func deliveriesCommand(stdout, stderr io.Writer) *ffcli.Command {
	var (
		state, provider string
		limit           int
	)
	list := clientCommand{
		name: "list", usage: "[flags]", help: "list webhook deliveries, newest first",
		addFlags: func(fs *flag.FlagSet) {
			fs.StringVar(&state, "state", "", "keep only deliveries in this state: pending, done, ignored, dead")
			fs.StringVar(&provider, "provider", "", "keep only deliveries of this provider: recall, postpress")
			pageLimit(fs, &limit)
		},
		call: func(ctx context.Context, conn *grpc.ClientConn, _ []string, p printer) error {
			var st calsyncv1.DeliveryState
			if state != "" {
				v, ok := calsyncv1.DeliveryState_value["DELIVERY_STATE_"+strings.ToUpper(state)]
				if !ok || v == 0 {
					return usageError{fmt.Errorf("--state: unknown delivery state %q (pending, done, ignored, dead)", state)}
				}
				st = calsyncv1.DeliveryState(v)
			}
			client := calsyncv1.NewDeliveryServiceClient(conn)
			t := p.table("ID", "PROVIDER", "EVENT", "STATE", "ATTEMPTS", "RECEIVED", "LAST ERROR")
			printed, token := 0, ""
			for {
				resp, err := client.ListDeliveries(ctx, &calsyncv1.ListDeliveriesRequest{
					State: st, Provider: provider, PageToken: token, PageSize: pageSize(limit, printed),
				})
				if err != nil {
					return rpcError(err)
				}
				for _, d := range resp.GetDeliveries() {
					if err := p.row(t, d, deliveryRow(d)...); err != nil {
						return err
					}
					printed++
				}
				if token = resp.GetNextPageToken(); token == "" || (limit > 0 && printed >= limit) {
					return t.Flush()
				}
			}
		},
	}
	retry := clientCommand{
		name: "retry", usage: "DELIVERY_ID", help: "put a dead-lettered delivery back in the queue", args: 1,
		call: func(ctx context.Context, conn *grpc.ClientConn, args []string, p printer) error {
			resp, err := calsyncv1.NewDeliveryServiceClient(conn).RetryDelivery(ctx, &calsyncv1.RetryDeliveryRequest{DeliveryId: args[0]})
			if err != nil {
				return rpcError(err)
			}
			if p.json {
				return printJSONLine(p.out, resp.GetDelivery())
			}
			_, err = fmt.Fprintf(p.out, "delivery %s queued again (%d attempts so far)\n", resp.GetDelivery().GetId(), resp.GetDelivery().GetAttempts())
			return err
		},
	}
	return group("deliveries", "list webhook deliveries and retry dead letters", stderr, list.build("deliveries", stdout), retry.build("deliveries", stdout))
}

func deliveryRow(d *calsyncv1.Delivery) []string {
	return []string{d.GetId(), d.GetProvider(), d.GetEventType(), enumName(d.GetState().String(), "DELIVERY_STATE_"),
		fmt.Sprint(d.GetAttempts()), timeText(d.GetReceiveTime()), oneLine(d.GetLastError(), 80)}
}

func resyncCommand(stdout io.Writer) *ffcli.Command {
	return clientCommand{
		name: "resync", usage: "CALENDAR_ID", help: "re-read every event of a calendar from its provider, in the background", args: 1,
		call: func(ctx context.Context, conn *grpc.ClientConn, args []string, p printer) error {
			resp, err := calsyncv1.NewCalendarServiceClient(conn).ResyncCalendar(ctx, &calsyncv1.ResyncCalendarRequest{CalendarId: args[0]})
			if err != nil {
				return rpcError(err)
			}
			if p.json {
				return printJSONLine(p.out, resp)
			}
			_, err = fmt.Fprintf(p.out, "resync of %s queued as delivery %s\n", args[0], resp.GetDeliveryId())
			return err
		},
	}.build("", stdout)
}
