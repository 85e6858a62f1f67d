package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/calsync/calsync/store"
)

// unavailableError marks an error of an unreachable database: it is
// errors.Is both its cause and [store.ErrUnavailable].
type unavailableError struct{ err error }

func (e unavailableError) Error() string   { return e.err.Error() }
func (e unavailableError) Unwrap() []error { return []error{e.err, store.ErrUnavailable} }

// classify marks err with [store.ErrUnavailable] when it says the server
// could not be reached or the connection broke, and returns other errors
// as they are. Every error leaving the store through a call that talks to
// the server passes through it, so that callers (the API, the webhooks)
// can tell "try again later" from a real failure.
func classify(err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) || !connectionLost(err) {
		return err
	}
	return unavailableError{err}
}

// connectionLost reports whether err comes from the connection rather than
// from the statement: no server to connect to, a server shutting down or
// starting up, or a connection that broke.
func connectionLost(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", // admin_shutdown: a fast or smart shutdown cut the session.
			"57P02", // crash_shutdown
			"57P03", // cannot_connect_now: starting up or in recovery.
			"53300": // too_many_connections
			return true
		}
		// Class 08: connection exception.
		return strings.HasPrefix(pgErr.Code, "08")
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Ping checks that the database answers a trivial query. It uses a
// connection of its own (one more than Options.MaxConns), so that a pool
// whose connections are all busy, or waiting on locks, is not taken for an
// unreachable database; it reconnects as the pool does.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	if err := db.pingPool.Ping(ctx); err != nil {
		// Whatever the cause (no answer within ctx included), a database
		// that does not answer a trivial query is unavailable.
		err = fmt.Errorf("postgres: ping: %w", err)
		if !errors.Is(err, store.ErrUnavailable) {
			err = unavailableError{err}
		}
		return err
	}
	return nil
}

var _ store.Pinger = (*DB)(nil)
