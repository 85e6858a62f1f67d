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
func (c *stmtCache) prepareWanted(ctx context.Context, w *sql.DB) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q := range c.wanted {
		if s, err := w.PrepareContext(ctx, q); err == nil {
			c.stmts[q] = s
		}
		// A statement that fails to prepare is simply run unprepared.
		delete(c.wanted, q)
	}
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for q, s := range c.stmts {
		errs = append(errs, s.Close())
		delete(c.stmts, q)
	}
	return errors.Join(errs...)
}

// writeQuerier runs statements in the writer's transaction, prepared ones
// from the cache when it has them. ReadChanges uses it in a read
// transaction with the read pool's cache.
type writeQuerier struct {
	tx    *sql.Tx
	cache *stmtCache
}

func (q writeQuerier) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s := q.cache.get(query); s != nil {
		return q.tx.StmtContext(ctx, s).ExecContext(ctx, args...)
	}
	return q.tx.ExecContext(ctx, query, args...)
}

func (q writeQuerier) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := q.cache.get(query); s != nil {
		return q.tx.StmtContext(ctx, s).QueryContext(ctx, args...)
	}
	return q.tx.QueryContext(ctx, query, args...)
}

func (q writeQuerier) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if s := q.cache.get(query); s != nil {
		return q.tx.StmtContext(ctx, s).QueryRowContext(ctx, args...)
	}
	return q.tx.QueryRowContext(ctx, query, args...)
}
