package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// stmtCache keeps the read pool's statements prepared across reads: for a
// point read, or a page of the change log, SQLite spends about as long
// parsing as running them. A statement is prepared after its first use,
// outside the read that used it: on a pool whose every connection is in a
// read transaction, preparing would wait for one of them to end.
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

// prepareWanted prepares the statements used since the last call. It
// prepares without holding the cache's lock: preparing takes a pooled
// connection, and on the read pool every connection may belong to a read
// transaction that is itself waiting in get for that lock.
func (c *stmtCache) prepareWanted(ctx context.Context, pool *sql.DB) {
	c.mu.Lock()
	var queries []string
	for q := range c.wanted {
		queries = append(queries, q)
		delete(c.wanted, q)
	}
	c.mu.Unlock()
	for _, q := range queries {
		// A statement that fails to prepare is simply run unprepared.
		s, err := pool.PrepareContext(ctx, q)
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

// cachedTxQuerier runs statements in a read transaction, prepared ones
// from the cache when it has them.
type cachedTxQuerier struct {
	tx    *sql.Tx
	cache *stmtCache
}

// stmt returns query's prepared statement bound to q.tx, or nil if query
// is not prepared yet.
func (q cachedTxQuerier) stmt(ctx context.Context, query string) *sql.Stmt {
	if s := q.cache.get(query); s != nil {
		return q.tx.StmtContext(ctx, s)
	}
	return nil
}

func (q cachedTxQuerier) QueryContext(ctx context.Context, query string, args ...any) (rowSet, error) {
	if s := q.stmt(ctx, query); s != nil {
		return sqlRows(s.QueryContext(ctx, args...))
	}
	return sqlRows(q.tx.QueryContext(ctx, query, args...))
}

func (q cachedTxQuerier) QueryRowContext(ctx context.Context, query string, args ...any) rowScanner {
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

func (q poolQuerier) QueryContext(ctx context.Context, query string, args ...any) (rowSet, error) {
	if s := q.cache.get(query); s != nil {
		return sqlRows(s.QueryContext(ctx, args...))
	}
	return sqlRows(q.db.QueryContext(ctx, query, args...))
}

func (q poolQuerier) QueryRowContext(ctx context.Context, query string, args ...any) rowScanner {
	if s := q.cache.get(query); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return q.db.QueryRowContext(ctx, query, args...)
}
