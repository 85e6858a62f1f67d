package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// table starts a human-readable table, or nothing with --json.
func (p printer) table(headers ...string) *tabwriter.Writer {
	t := tabwriter.NewWriter(p.out, 0, 4, 2, ' ', 0)
	if !p.json {
		fmt.Fprintln(t, strings.Join(headers, "\t"))
	}
	return t
}

// row prints one item: its cells in the table, or m as a JSON line.
func (p printer) row(t *tabwriter.Writer, m proto.Message, cells ...string) error {
	if p.json {
		return printJSONLine(p.out, m)
	}
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		} else {
			cells[i] = strings.ReplaceAll(c, "\t", " ")
		}
	}
	_, err := fmt.Fprintln(t, strings.Join(cells, "\t"))
	return err
}

// record prints one object: "field: value" lines, or m as a JSON line.
func (p printer) record(m proto.Message, fields [][2]string) error {
	if p.json {
		return printJSONLine(p.out, m)
	}
	t := tabwriter.NewWriter(p.out, 0, 4, 2, ' ', 0)
	for _, f := range fields {
		if f[1] == "" {
			continue
		}
		fmt.Fprintf(t, "%s:\t%s\n", f[0], f[1])
	}
	return t.Flush()
}

func timeText(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// eventTime is an event's start or end: the instant, or the date of an
// all-day event.
func eventTime(ts *timestamppb.Timestamp, date string) string {
	if date != "" {
		return date
	}
	return timeText(ts)
}

// enumName drops an enum value's prefix: CALENDAR_STATUS_CONNECTED is
// "connected".
func enumName(v, prefix string) string {
	v = strings.TrimPrefix(v, prefix)
	if v == "UNSPECIFIED" {
		return ""
	}
	return strings.ToLower(v)
}

// oneLine squeezes s onto one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
