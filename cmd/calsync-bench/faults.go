package main

import (
	"bytes"
	"context"
	"errors"
)

// FaultResult is the outcome of `calsync-bench faults`.
type FaultResult struct{}

func runFaults(ctx context.Context, bin, out string) error { return errors.New("not yet") }

func writeFaultsMarkdown(b *bytes.Buffer, f *FaultResult) {}
