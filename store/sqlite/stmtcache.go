package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// stmtCache keeps statements prepared across transactions: for the small
// statements of an Update, or a page of the change log, SQLite spends about
// as long parsing as running them. A statement is prepared after its first
// use, between transactions — the writer has a single connection, so
// preparing during a transaction would wait for that transaction for ever.
type stmtCache struct {
	mu     sync.Mutex
	stmts  map[string]*sql.Stmt
	wanted map[string]bool
	closed bool
}

func newStmtCache() *stmtCache {
	return &stmtCache{stmts: map[string]*sql.Stmt{}, wanted: map[string]bool{}}
}

// get returns the prepared statement for query, or nil after noting that
// query should be prepared.
func (c *stmtCache) get(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.stmts[query]
	if !ok {
		c.wanted[query] = true
	}
	return s
}

// prepareWanted prepares the statements used since the last call. For the
// writer, the caller holds the writer lock and has no transaction open.
//
// It prepares without holding the cache's lock: preparing takes a pooled
// connection, and on the read pool every connection may belong to a read
// transaction that is itself waiting in get for that lock.
func (c *stmtCache) prepareWanted(ctx context.Context, w *sql.DB) {
	c.mu.Lock()
	var queries []string
	for q := range c.wanted {
		queries = append(queries, q)
		delete(c.wanted, q)
	}
	c.mu.Unlock()
	for _, q := range queries {
		// A statement that fails to prepare is simply run unprepared.
		s, err := w.PrepareContext(ctx, q)
		if err != nil {
			continue
		}
		c.mu.Lock()
		if _, ok := c.stmts[q]; ok || c.closed {
			// Prepared meanwhile by another caller, or the cache closed.
			s.Close()
		} else {
			c.stmts[q] = s
		}
		c.mu.Unlock()
	}
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for q, s := range c.stmts {
		errs = append(errs, s.Close())
		delete(c.stmts, q)
	}
	return errors.Join(errs...)
}

// writeQuerier runs statements in the writer's transaction, prepared ones
// from the cache when it has them. ReadChanges uses it in a read
// transaction with the read pool's cache. With bound set, a statement is
// bound to the transaction once and reused by its later calls, instead of
// once per call.
type writeQuerier struct {
	tx    *sql.Tx
	cache *stmtCache
	bound *boundStmts
}

// stmt returns query's prepared statement bound to q.tx, or nil if query
// is not prepared yet.
func (q writeQuerier) stmt(ctx context.Context, query string) *sql.Stmt {
	s := q.cache.get(query)
	if s == nil {
		return nil
	}
	if q.bound == nil {
		return q.tx.StmtContext(ctx, s)
	}
	return q.bound.get(ctx, q.tx, s)
}

func (q writeQuerier) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s := q.stmt(ctx, query); s != nil {
		return s.ExecContext(ctx, args...)
	}
	return q.tx.ExecContext(ctx, query, args...)
}

func (q writeQuerier) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := q.stmt(ctx, query); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return q.tx.QueryContext(ctx, query, args...)
}

func (q writeQuerier) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if s := q.stmt(ctx, query); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return q.tx.QueryRowContext(ctx, query, args...)
}

// poolQuerier runs statements on a pool outside any transaction, prepared
// ones from the cache when it has them.
type poolQuerier struct {
	db    *sql.DB
	cache *stmtCache
}

func (q poolQuerier) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := q.cache.get(query); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return q.db.QueryContext(ctx, query, args...)
}

func (q poolQuerier) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if s := q.cache.get(query); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return q.db.QueryRowContext(ctx, query, args...)
}

// boundStmts are the cache's statements bound to one transaction: binding
// one (Tx.StmtContext) costs allocations and locking on every call, and a
// group commit runs the same few statements hundreds of times. It belongs
// to one write transaction's goroutine and is not safe for concurrent use.
// database/sql closes the bound statements when their transaction ends.
type boundStmts struct {
	tx *sql.Tx
	m  map[*sql.Stmt]*sql.Stmt
}

// get returns s bound to tx. Statements bound to another transaction are
// forgotten first: they ended with it.
func (b *boundStmts) get(ctx context.Context, tx *sql.Tx, s *sql.Stmt) *sql.Stmt {
	if b.tx != tx {
		b.tx = tx
		clear(b.m)
	}
	if ts, ok := b.m[s]; ok {
		return ts
	}
	if b.m == nil {
		b.m = make(map[*sql.Stmt]*sql.Stmt)
	}
	ts := tx.StmtContext(ctx, s)
	b.m[s] = ts
	return ts
}
