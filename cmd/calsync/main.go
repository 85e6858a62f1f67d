// Command calsync is the calsync calendar sync service and its command-line
// client: `calsync serve` runs the service; the other subcommands talk to a
// running one.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/peterbourgon/ff/v3/ffcli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one calsync command line and returns the process exit code:
// 0 on success, 2 for a usage error, 1 for anything else.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := &ffcli.Command{
		Name:       "calsync",
		ShortUsage: "calsync <subcommand> [flags]",
		ShortHelp:  "calendar sync service",
		FlagSet:    flag.NewFlagSet("calsync", flag.ContinueOnError),
		Subcommands: []*ffcli.Command{
			serveCommand(stderr),
			watchCommand(stdout, stderr),
			calendarsCommand(stdout, stderr),
			eventsCommand(stdout, stderr),
			deliveriesCommand(stdout, stderr),
			resyncCommand(stdout),
		},
		Exec: func(context.Context, []string) error { return flag.ErrHelp },
	}
	var quiet func(*ffcli.Command)
	quiet = func(c *ffcli.Command) {
		c.FlagSet.SetOutput(stderr)
		for _, sub := range c.Subcommands {
			quiet(sub)
		}
	}
	quiet(root)
	if err := root.ParseAndRun(ctx, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			if len(args) == 0 {
				fmt.Fprintln(stderr, ffcli.DefaultUsageFunc(root))
			}
			return 2
		}
		fmt.Fprintf(stderr, "calsync: %v\n", err)
		var usage usageError
		// ffcli reports a bad flag value as a plain error with this prefix.
		if errors.As(err, &usage) || strings.HasPrefix(err.Error(), "error parsing commandline arguments") {
			return 2
		}
		return 1
	}
	return 0
}

// usageError is a mistake in the command line, reported with exit code 2.
type usageError struct{ error }
