// Package postgres is calsync's [store.Store] on PostgreSQL, through pgx
// (pgxpool), for deployments where several calsync replicas share one
// database.
//
// # Writes
//
// Like the SQLite store, each store instance (each process) has one writer
// at a time: Update, the inbox's group commit, RecordAttempt, RetryDelivery,
// PruneDeliveries and CompactChanges take turns, and waiting for the turn
// honours the caller's ctx. Concurrent webhooks share one transaction
// (group commit, see [DB.Enqueue]), and so do concurrent Updates, each in
// its own savepoint (see [DB.Update]). synchronous_commit is forced on for the
// store's sessions: a call that returned nil is durable.
//
// A write transaction keeps its writes (events, calendars, sync states,
// changes, delivery outcomes) in memory and sends them together in one
// round trip before it commits (or an Update's savepoint is released);
// its reads see them there. So its round trips do not grow with its
// writes, only with its reads: the instance's writer, and the append lock
// every replica's appending transactions share, are held that much less.
// A write the server refuses (a FinishDelivery of no delivery, say) fails
// the Update or the intake transaction when the writes are sent, not at
// the call; in a shared transaction it still fails that Update alone.
//
// # Change-log ordering across writers
//
// Cursors are handed out under one transaction-scoped advisory lock, the
// change log's append lock (pg_advisory_xact_lock), taken by a write
// transaction at its first AppendChange and held until it commits or rolls
// back. Under the lock the transaction reads the change_log_head row, hands
// out the cursors after it and writes the new head with its changes.
// PostgreSQL makes a committed
// transaction visible before it releases its locks, so the writer that
// takes cursor n+1 starts only once the holder of n is visible (or rolled
// back, which also rolls the head back: cursors stay gap-free). Cursors are
// therefore handed out in commit order, and a reader that has seen cursor
// n+1 is guaranteed to see n: a transaction that took its cursor and then
// commits late holds every later cursor back with it, so no reader can
// skip it. The price is that appending transactions of all replicas commit
// one at a time; group commit makes them few and large.
//
// # Commit hooks
//
// [DB.OnCommit] hooks see every change committed on the database, by any
// instance in any process, this one included: once each, in cursor order,
// with no gap, called one at a time from a goroutine of the store's own,
// the change feed (feed.go). The feed keeps the newest cursor it handed to
// the hooks, starting at the change log's head when the store opened, and
// reads the change log after it:
//
//   - at once after this instance commits changes; when they directly
//     follow what the hooks have seen they are handed over without a read;
//   - when another instance hints that it committed (LISTEN/NOTIFY on the
//     channel calsync_changes, on one connection of its own beside the pool;
//     the hint is sent after the commit, outside the write transaction, at
//     most one at a time per instance, because a NOTIFY inside the
//     transaction would serialize every commit on the server's
//     notification queue lock), and after that connection reconnects;
//   - every Options.PollInterval (default 1 s), so that a lost hint costs
//     latency, never a change. Options.PollOnly turns LISTEN/NOTIFY off (for
//     a transaction-pooling PgBouncer, which cannot carry LISTEN); the other
//     instances' changes then reach the hooks within the poll interval.
//
// A change compacted away before the feed read it (an instance far behind
// retention) cannot be delivered: the feed logs it and continues after the
// compacted changes, so the hooks see cursors jump. The watch hub treats
// such a jump as a gap: its streams behind it read the change log, which
// fails them with [store.ErrCompacted], and none skips changes silently.
package postgres

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/gate"
)

var _ store.Store = (*DB)(nil)

// migrations holds the numbered schema migrations, applied in order at Open.
//
//go:embed migrations/*.sql
var migrations embed.FS

// Advisory lock keys (the two-int form, a key space apart from the
// one-bigint form dedupe uses). lockClass tells calsync's locks apart from
// other applications sharing the database.
const (
	lockClass     = 0x63616c73 // "cals"
	lockMigrate   = 1
	lockAppendLog = 2
	// lockOrdering is the class of the ordering keys' locks, whose second
	// half is a hash of the key (see [DB.EnqueueApply]).
	lockOrdering = 0x63616c6f // "calo"
)

// DefaultMaxBatch is the default most deliveries committed by one inbox
// transaction.
const DefaultMaxBatch = 256

// DefaultMaxConns is the pool size when neither Options.MaxConns nor the
// URL's pool_max_conns sets one.
const DefaultMaxConns = 16

// Options tune a [DB]. The zero value is the durable default.
type Options struct {
	// MaxConns caps the connection pool; 0 keeps the URL's pool_max_conns,
	// or DefaultMaxConns. [DB.Ping] opens one connection more.
	MaxConns int
	// MaxBatch is the most deliveries [DB.Enqueue] commits in one
	// transaction; 0 means DefaultMaxBatch.
	MaxBatch int
	// DedupeWindow is how long a delivery absorbs later deliveries with its
	// provider and dedup key (see [store.Inbox]); 0 means
	// store.DefaultDedupeWindow.
	DedupeWindow time.Duration
	// TempDir is where snapshots are spooled; empty means the system's
	// temporary directory.
	TempDir string
	// Logger receives what the store has to report; nil discards it.
	Logger *slog.Logger
	// Now is the clock commit times and delivery times are read from; nil
	// means time.Now.
	Now func() time.Time
	// OnBatch, if set, is called after every group commit of the inbox with
	// its size and duration. It must not block.
	OnBatch func(size int, d time.Duration)
	// PollInterval is how often the commit hooks' feed reads the change
	// log for other instances' commits when no notification came (see
	// Commit hooks in the package documentation); 0 means
	// DefaultPollInterval.
	PollInterval time.Duration
	// PollOnly turns LISTEN/NOTIFY off: other instances' commits reach the
	// hooks within PollInterval instead of at once. For connections through
	// a transaction-pooling PgBouncer, which cannot carry LISTEN.
	PollOnly bool

	// tracer, if set, sees the pool's statements (tests count round trips
	// with it).
	tracer pgx.QueryTracer
}

// IsURL reports whether db names a PostgreSQL database (a postgres:// or
// postgresql:// URL) rather than a SQLite file.
func IsURL(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// Redact returns the URL u with any password replaced, fit for logs and
// error messages.
func Redact(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	// The authority ends at the first '/', '?' or '#'; the user info at the
	// authority's last '@'.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	auth, tail := rest[:end], rest[end:]
	if at := strings.LastIndex(auth, "@"); at >= 0 {
		if user, _, hasPass := strings.Cut(auth[:at], ":"); hasPass {
			auth = user + ":xxxxx" + auth[at:]
		}
	}
	tail = redactQuery(tail)
	return scheme + "://" + auth + tail
}

// redactQuery hides a password given as a query parameter.
func redactQuery(tail string) string {
	before, query, ok := strings.Cut(tail, "?")
	if !ok {
		return tail
	}
	parts := strings.Split(query, "&")
	for i, p := range parts {
		if k, _, ok := strings.Cut(p, "="); ok && strings.EqualFold(k, "password") {
			parts[i] = k + "=xxxxx"
		}
	}
	return before + "?" + strings.Join(parts, "&")
}

// DB is a calsync store in one PostgreSQL database. It is safe for
// concurrent use, and several DBs (in one process or many) may share one
// database.
type DB struct {
	pool *pgxpool.Pool
	// pingPool holds the one connection [DB.Ping] uses, apart from pool so
	// that a pool busy with work does not pass for an unreachable database.
	pingPool     *pgxpool.Pool
	log          *slog.Logger
	now          func() time.Time
	maxBatch     int
	onBatch      func(size int, d time.Duration)
	dedupeWindow time.Duration
	tempDir      string
	id           string

	// wlock is the one-slot semaphore of this instance's writer.
	wlock chan struct{}

	hooksMu sync.RWMutex
	hooks   []func([]store.ChangeRecord)

	// feed hands every instance's commits to the hooks.
	feed *feed

	enqueue       chan *enqueueRequest
	committerDone chan struct{}
	// updates queues Updates for the next writer turn to run together.
	updates chan *updateRequest

	gate      gate.Gate
	closeOnce sync.Once
}

// Open connects to the database at url (postgres://...), brings its schema
// up to date and returns the store. Several processes may open the same
// database at once. The returned DB must be closed.
func Open(ctx context.Context, url string, opts Options) (*DB, error) {
	if opts.MaxBatch < 0 || opts.MaxConns < 0 || opts.DedupeWindow < 0 || opts.PollInterval < 0 {
		return nil, errors.New("postgres: negative option")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message may quote the URL: say only what is wrong.
		return nil, fmt.Errorf("postgres: invalid database URL %s", Redact(url))
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = int32(opts.MaxConns)
	} else if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConns < 2 {
		// The writer and a reader (a Snapshot's, say) need one each.
		cfg.MaxConns = 2
	}
	// A commit is durable before calsync answers, whatever the server's
	// default.
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	if opts.tracer != nil {
		cfg.ConnConfig.Tracer = opts.tracer
	}
	db := &DB{
		log:           opts.Logger,
		now:           opts.Now,
		maxBatch:      opts.MaxBatch,
		onBatch:       opts.OnBatch,
		dedupeWindow:  opts.DedupeWindow,
		tempDir:       opts.TempDir,
		wlock:         make(chan struct{}, 1),
		committerDone: make(chan struct{}),
	}
	if db.log == nil {
		db.log = slog.New(slog.DiscardHandler)
	}
	if db.now == nil {
		db.now = time.Now
	}
	if db.maxBatch == 0 {
		db.maxBatch = DefaultMaxBatch
	}
	if db.dedupeWindow == 0 {
		db.dedupeWindow = store.DefaultDedupeWindow
	}
	db.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, classify(fmt.Errorf("postgres: connect to %s: %w", Redact(url), err))
	}
	if err := db.migrate(ctx); err != nil {
		db.pool.Close()
		return nil, classify(fmt.Errorf("postgres: %s: %w", Redact(url), err))
	}
	pingCfg := cfg.Copy()
	pingCfg.MaxConns, pingCfg.MinConns = 1, 0
	if db.pingPool, err = pgxpool.NewWithConfig(ctx, pingCfg); err != nil {
		db.pool.Close()
		return nil, classify(fmt.Errorf("postgres: connect to %s: %w", Redact(url), err))
	}
	// The hooks see the changes committed from now on.
	bounds, err := db.ChangeBounds(ctx)
	if err != nil {
		db.pool.Close()
		db.pingPool.Close()
		return nil, fmt.Errorf("postgres: %s: %w", Redact(url), err)
	}
	poll := opts.PollInterval
	if poll == 0 {
		poll = DefaultPollInterval
	}
	db.feed = newFeed(db, bounds.Head, poll, !opts.PollOnly, cfg.ConnConfig.Copy())
	db.enqueue = make(chan *enqueueRequest, 4*db.maxBatch)
	db.updates = make(chan *updateRequest, 4*db.maxBatch)
	go db.commitLoop()
	return db, nil
}

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the embedded migrations in version order; files are
// named NNNN_description.sql, numbered from 1 without gaps.
func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %q is not named NNNN_name.sql", e.Name())
		}
		b, err := fs.ReadFile(migrations, path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s out of sequence (want version %d)", m.name, i+1)
		}
	}
	return ms, nil
}

// migrate applies the migrations the database lacks and creates the store
// id, holding a session advisory lock so that replicas starting at once
// against an empty or older database migrate it once, one after the other.
// Each migration commits with its record in schema_migrations.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, lockClass, lockMigrate); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	defer func() {
		// A session lock outlives a failed transaction: release it whatever
		// happened, or close the connection so the server does.
		if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1, $2)`, lockClass, lockMigrate); err != nil {
			conn.Hijack().Close(context.Background())
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_ns BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var current int
	if err := conn.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > len(ms) {
		return fmt.Errorf("database schema version %d is newer than this program knows (%d)", current, len(ms))
	}
	for _, m := range ms[current:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_ns) VALUES ($1, $2, $3)`,
				m.version, m.name, db.now().UnixNano())
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
		db.log.Info("postgres migration applied", "migration", m.name)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, $2), ($3, '0') ON CONFLICT (key) DO NOTHING`,
		metaStoreID, hex.EncodeToString(b[:]), metaCompacted); err != nil {
		return fmt.Errorf("init meta: %w", err)
	}
	if err := conn.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, metaStoreID).Scan(&db.id); err != nil {
		return fmt.Errorf("read store id: %w", err)
	}
	return nil
}

// Meta keys.
const (
	metaStoreID   = "store_id"
	metaCompacted = "changes_compacted"
)

// ID returns the store id, created when the database was first opened.
func (db *DB) ID() string { return db.id }

// Close waits for calls under way, commits the deliveries already queued,
// stops the commit hooks' feed (no hook is called once Close returned) and
// closes the pool. Calls after Close return [store.ErrClosed].
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		// The feed goes first: its reads are calls the gate waits for.
		db.feed.stop()
		db.gate.Shut()
		close(db.enqueue)
		<-db.committerDone
		db.pool.Close()
		db.pingPool.Close()
	})
	return nil
}

func (db *DB) enter() error {
	if !db.gate.Enter() {
		return store.ErrClosed
	}
	return nil
}

func (db *DB) leave() { db.gate.Leave() }

// lockWriter takes this instance's writer turn, or gives up when ctx ends.
func (db *DB) lockWriter(ctx context.Context) error {
	select {
	case db.wlock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (db *DB) unlockWriter() { <-db.wlock }

// write takes the writer turn and runs fn in a transaction.
func (db *DB) write(ctx context.Context, fn func(pgx.Tx) error) error {
	if err := db.lockWriter(ctx); err != nil {
		return err
	}
	defer db.unlockWriter()
	return classify(pgx.BeginFunc(ctx, db.pool, fn))
}

// read runs fn in a read-only REPEATABLE READ transaction: every query in it
// sees one snapshot.
func (db *DB) read(ctx context.Context, fn func(pgx.Tx) error) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	return classify(pgx.BeginTxFunc(ctx, db.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, fn))
}

// querier runs statements on the pool or in a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}
