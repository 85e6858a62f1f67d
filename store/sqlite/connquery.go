package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
)

// The writer's transactions run below database/sql.
//
// database/sql costs every statement a pass through its connection
// locks, a conversion of each argument, a statement bound to the
// transaction and the allocations of all three; a group commit runs
// hundreds of statements, and a webhook pays for several. The writer has
// a single connection and a single goroutine using it at a time (the
// writer lock), so none of that machinery protects anything: connQuerier
// runs its statements on modernc's connection directly, inside
// sql.Conn.Raw, through statements prepared once per connection.
//
// What callers may rely on: a connQuerier is used only inside the Raw call
// that made it, by one goroutine; its rows are the driver's own copies
// (modernc copies every text and blob it returns), so what Scan hands out
// stays valid after the next row; it supports the argument and
// destination types the store's statements use, and returns an error for
// any other.

// rowSet is what reads need of a query's rows: *sql.Rows and connRows.
type rowSet interface {
	Next() bool
	Scan(dest ...any) error
	Close() error
	Err() error
}

// rowScanner is what reads need of a single-row query: *sql.Row and
// connRow.
type rowScanner interface {
	Scan(dest ...any) error
}

// txQuerier runs reads in a database/sql transaction.
type txQuerier struct{ tx *sql.Tx }

func (q txQuerier) QueryContext(ctx context.Context, query string, args ...any) (rowSet, error) {
	return sqlRows(q.tx.QueryContext(ctx, query, args...))
}

// sqlRows returns database/sql's rows as a rowSet: a nil *sql.Rows must
// not become a rowSet that is not nil.
func sqlRows(rows *sql.Rows, err error) (rowSet, error) {
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (q txQuerier) QueryRowContext(ctx context.Context, query string, args ...any) rowScanner {
	return q.tx.QueryRowContext(ctx, query, args...)
}

// driverConn is what the writer needs of the driver's connection.
type driverConn interface {
	driver.Conn
	driver.ConnPrepareContext
}

// connStmts are the writer's statements, prepared on its driver
// connection on first use and kept for the connection's life. Only the
// goroutine holding the writer lock uses them, inside sql.Conn.Raw.
type connStmts struct {
	// conn is the driver connection the statements belong to: should
	// database/sql ever replace the writer's connection, they are
	// forgotten with it.
	conn  any
	stmts map[string]driver.Stmt
	// args is the buffer each statement's arguments are converted into.
	args []driver.NamedValue
}

// querier returns a querier on dc, the driver connection sql.Conn.Raw
// handed over, valid until Raw returns.
func (s *connStmts) querier(dc any) (*connQuerier, error) {
	c, ok := dc.(driverConn)
	if !ok {
		return nil, fmt.Errorf("sqlite: driver connection %T cannot prepare statements", dc)
	}
	if s.conn != dc {
		// Statements of a connection database/sql has closed are gone
		// with it: closing them now would touch freed memory.
		s.conn, s.stmts = dc, make(map[string]driver.Stmt)
	}
	return &connQuerier{conn: c, stmts: s}, nil
}

// close closes the statements; dc is the connection they belong to.
func (s *connStmts) close(dc any) error {
	if s.conn != dc {
		return nil
	}
	var errs []error
	for q, st := range s.stmts {
		errs = append(errs, st.Close())
		delete(s.stmts, q)
	}
	s.conn = nil
	return errors.Join(errs...)
}

// closeWriterStmts closes the writer's statements, before its connection
// closes.
func (db *DB) closeWriterStmts() error {
	conn, err := db.w.Conn(context.Background())
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(db.wstmts.close)
}

// connQuerier runs statements on the writer's driver connection.
type connQuerier struct {
	conn  driverConn
	stmts *connStmts
}

// prepared returns query prepared on the connection and args converted
// for it, in a buffer the caller clears once the statement has bound them.
func (q *connQuerier) prepared(ctx context.Context, query string, args []any) (driver.Stmt, []driver.NamedValue, error) {
	st, ok := q.stmts.stmts[query]
	if !ok {
		var err error
		if st, err = q.conn.PrepareContext(ctx, query); err != nil {
			return nil, nil, err
		}
		q.stmts.stmts[query] = st
	}
	// Converted as database/sql would for this driver: the integer kinds
	// to int64, the rest as they are; sql.NullInt64 and its kind through
	// their Value.
	nv := q.stmts.args[:0]
	for i, a := range args {
		v, err := driverValue(a)
		if err != nil {
			return nil, nil, fmt.Errorf("sqlite: argument %d: %w", i+1, err)
		}
		nv = append(nv, driver.NamedValue{Ordinal: i + 1, Value: v})
	}
	q.stmts.args = nv
	return st, nv, nil
}

func driverValue(a any) (driver.Value, error) {
	switch v := a.(type) {
	case nil, int64, string, []byte, bool, float64:
		return v, nil
	case int:
		return int64(v), nil
	case int32:
		return int64(v), nil
	case uint32:
		return int64(v), nil
	case driver.Valuer:
		return v.Value()
	}
	return nil, fmt.Errorf("unsupported type %T", a)
}

// ExecContext runs a statement that returns no rows.
func (q *connQuerier) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, nv, err := q.prepared(ctx, query, args)
	if err != nil {
		return nil, err
	}
	// Cleared, the buffer keeps none of the arguments' memory alive.
	defer clear(nv)
	return st.(driver.StmtExecContext).ExecContext(ctx, nv)
}

// rollback ends the transaction, if one is open. Its error is not the
// caller's: ROLLBACK fails when there is nothing to roll back.
func (q *connQuerier) rollback() {
	q.ExecContext(context.Background(), "ROLLBACK")
}

// QueryContext runs a query; the rows must be closed before the next
// statement runs.
func (q *connQuerier) QueryContext(ctx context.Context, query string, args ...any) (rowSet, error) {
	rows, err := q.query(ctx, query, args)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (q *connQuerier) query(ctx context.Context, query string, args []any) (*connRows, error) {
	st, nv, err := q.prepared(ctx, query, args)
	if err != nil {
		return nil, err
	}
	defer clear(nv)
	rows, err := st.(driver.StmtQueryContext).QueryContext(ctx, nv)
	if err != nil {
		return nil, err
	}
	return &connRows{rows: rows, row: make([]driver.Value, len(rows.Columns()))}, nil
}

// QueryRowContext runs a query for its first row.
func (q *connQuerier) QueryRowContext(ctx context.Context, query string, args ...any) rowScanner {
	rows, err := q.query(ctx, query, args)
	return connRow{rows: rows, err: err}
}

// connRows are a query's rows on the driver's connection, with
// database/sql's Rows' methods.
type connRows struct {
	rows   driver.Rows
	row    []driver.Value
	err    error
	closed bool
}

func (r *connRows) Next() bool {
	if r.closed {
		return false
	}
	if err := r.rows.Next(r.row); err != nil {
		if err != io.EOF {
			r.err = err
		}
		r.Close()
		return false
	}
	return true
}

func (r *connRows) Scan(dest ...any) error {
	if r.closed {
		return errors.New("sqlite: Scan on closed rows")
	}
	if len(dest) != len(r.row) {
		return fmt.Errorf("sqlite: Scan of %d columns into %d destinations", len(r.row), len(dest))
	}
	for i, d := range dest {
		if err := assign(d, r.row[i]); err != nil {
			return fmt.Errorf("sqlite: Scan column %d: %w", i, err)
		}
	}
	return nil
}

func (r *connRows) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return r.rows.Close()
}

func (r *connRows) Err() error { return r.err }

// connRow is a query's first row, with database/sql's Row's Scan.
type connRow struct {
	rows *connRows
	err  error
}

func (r connRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	return r.rows.Close()
}

// assign stores the driver's value v in dest, for the destinations the
// store's statements scan into. The driver's []byte values are copies of
// their own, which dest may keep.
func assign(dest any, v driver.Value) error {
	switch d := dest.(type) {
	case *any:
		*d = v
		return nil
	case *sql.RawBytes:
		return assign((*[]byte)(d), v)
	case *[]byte:
		switch v := v.(type) {
		case []byte:
			*d = v
			return nil
		case string:
			*d = []byte(v)
			return nil
		case nil:
			*d = nil
			return nil
		}
	case *string:
		switch v := v.(type) {
		case string:
			*d = v
			return nil
		case []byte:
			*d = string(v)
			return nil
		}
	case *int64:
		if n, ok := v.(int64); ok {
			*d = n
			return nil
		}
	case *int:
		if n, ok := v.(int64); ok {
			*d = int(n)
			return nil
		}
	case *int32:
		if n, ok := v.(int64); ok && n == int64(int32(n)) {
			*d = int32(n)
			return nil
		}
	case *bool:
		if n, ok := v.(int64); ok {
			*d = n != 0
			return nil
		}
	case *sql.NullInt64:
		switch v := v.(type) {
		case int64:
			*d = sql.NullInt64{Int64: v, Valid: true}
			return nil
		case nil:
			*d = sql.NullInt64{}
			return nil
		}
	}
	return fmt.Errorf("cannot store %T in %T", v, dest)
}
