// Package sqlite is calsync's [store.Store] on SQLite, through the pure-Go
// modernc.org/sqlite driver.
//
// One database file holds everything. Writes go through a single connection guarded
// by a lock, so transactions never contend inside SQLite and commit hooks see
// commits in cursor order; reads go through a separate pool of read-only
// connections and, thanks to WAL, never wait for writers (only, briefly, for
// the fsync of a commit they may have seen: see durable.go). Webhook
// deliveries are committed in groups (see [DB.Enqueue]) so that durable
// ingestion is not limited to one fsync per request, and a commit's fsync
// runs while the writer writes the next one.
//
// One process opens a database at a time: the writer takes what it wrote
// as what the file holds (change cursors from the last inserted rowid, the
// events it keeps in memory; see recent.go).
package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // Registers the "sqlite" database/sql driver.

	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/gate"
	"github.com/calsync/calsync/store/sqlite/walvfs"
)

var _ store.Store = (*DB)(nil)

// migrations holds the numbered schema migrations, applied in order at Open.
//
//go:embed migrations/*.sql
var migrations embed.FS

// DefaultMaxBatch is the default most deliveries committed by one inbox
// transaction.
const DefaultMaxBatch = 256

// Options tune a [DB]. The zero value is the durable default.
type Options struct {
	// Synchronous is SQLite's synchronous setting: "FULL" (the default; a
	// commit survives power loss) or "NORMAL" (a commit survives a crash of
	// the process but may be lost with the machine's power).
	Synchronous string
	// MaxBatch is the most deliveries [DB.Enqueue] commits in one
	// transaction; 0 means DefaultMaxBatch. 1 commits every delivery on its
	// own, which is only useful as a baseline for benchmarks.
	MaxBatch int
	// DedupeWindow is how long a delivery absorbs later deliveries with its
	// provider and dedup key (see [store.Inbox]); 0 means
	// store.DefaultDedupeWindow.
	DedupeWindow time.Duration
	// TempDir is where snapshots are spooled (see [DB.Snapshot]); empty
	// means the database's own directory, which is on disk, where the
	// system's temporary directory may live in memory.
	TempDir string
	// Logger receives what the store has to report; nil discards it.
	Logger *slog.Logger
	// Now is the clock commit times and delivery times are read from; nil
	// means time.Now.
	Now func() time.Time
	// OnBatch, if set, is called after every group commit of the inbox with
	// the number of deliveries in the batch and how long writing them took,
	// until durable, so metrics can show whether group commit is doing its
	// job. It is called from the goroutine that syncs commits and must not
	// block.
	OnBatch func(size int, d time.Duration)
	// OnCheckpoint, if set, is called after every checkpoint (see
	// checkpoint.go) with the WAL's length in pages, how many of them are
	// now in the database file, and whether the checkpoint had to hold the
	// writer lock because the WAL had grown too long. It is called from the
	// checkpointer goroutine and must not block for long.
	OnCheckpoint func(walPages, copied int, forced bool)

	// lingerFor and waveGap replace the group committer's defaults for its
	// wait for the rest of a wave (inbox.go), for this package's tests.
	lingerFor, waveGap time.Duration
}

// DB is a calsync store in one SQLite database file. It is safe for
// concurrent use.
type DB struct {
	path     string
	log      *slog.Logger
	now      func() time.Time
	maxBatch int
	onBatch  func(size int, d time.Duration)
	// lingerFor and waveGap are Options' (0: the defaults).
	lingerFor, waveGap time.Duration
	id                 string
	// dedupeWindow bounds dedupe in time; tempDir holds snapshot spools.
	dedupeWindow time.Duration
	tempDir      string

	// w is the single writer connection. Every write transaction holds
	// wlock (a one-slot semaphore, so waiting for it can be cancelled).
	w     *sql.DB
	wlock chan struct{}
	// r is the pool of read-only connections.
	r *sql.DB
	// ckpt copies the WAL into the database file, off the writer's path.
	ckpt *checkpointer
	// sync makes the writer's commits durable (see durable.go).
	sync *syncer

	hooksMu sync.RWMutex
	hooks   []func([]store.ChangeRecord)

	// enqueue feeds the group committer; committerDone closes when it has
	// drained the queue and stopped.
	enqueue       chan *enqueueRequest
	committerDone chan struct{}
	// updates queues Updates for the next leader, the one Update caller
	// holding updateLeader (a one-slot semaphore), to run together.
	updates      chan *updateRequest
	updateLeader chan struct{}
	// wstmts are the writer's statements, prepared on its connection
	// (connquery.go); readStmts keeps the hottest reads on the read pool
	// prepared.
	wstmts    connStmts
	readStmts *stmtCache
	// recent keeps the rows of the events written last (see recent.go);
	// only the writer uses it.
	recent *recentEvents

	gate      gate.Gate
	closeOnce sync.Once
	closeErr  error
}

// Open opens the database at path, creating it if needed, and brings its
// schema up to date. The returned DB must be closed.
func Open(ctx context.Context, path string, opts Options) (*DB, error) {
	syncMode := strings.ToUpper(strings.TrimSpace(opts.Synchronous))
	switch syncMode {
	case "":
		syncMode = "FULL"
	case "FULL", "NORMAL":
	default:
		return nil, fmt.Errorf("sqlite: synchronous must be FULL or NORMAL, not %q", opts.Synchronous)
	}
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	if opts.MaxBatch < 0 {
		return nil, fmt.Errorf("sqlite: negative MaxBatch %d", opts.MaxBatch)
	}
	if opts.DedupeWindow < 0 {
		return nil, fmt.Errorf("sqlite: negative DedupeWindow %v", opts.DedupeWindow)
	}
	db := &DB{
		path:          path,
		log:           opts.Logger,
		now:           opts.Now,
		maxBatch:      opts.MaxBatch,
		lingerFor:     opts.lingerFor,
		waveGap:       opts.waveGap,
		onBatch:       opts.OnBatch,
		dedupeWindow:  opts.DedupeWindow,
		tempDir:       opts.TempDir,
		wlock:         make(chan struct{}, 1),
		readStmts:     newStmtCache(),
		recent:        newRecentEvents(recentEventsBytes),
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
	if db.tempDir == "" {
		db.tempDir = filepath.Dir(path)
	}
	if db.dedupeWindow == 0 {
		db.dedupeWindow = store.DefaultDedupeWindow
	}

	if err := walvfs.Register(); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	var err error
	db.w, err = sql.Open("sqlite", dsn(path, syncMode, writerConn))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	// One connection, never recycled: every write goes through it.
	db.w.SetMaxOpenConns(1)
	db.w.SetMaxIdleConns(1)
	db.w.SetConnMaxLifetime(0)
	db.w.SetConnMaxIdleTime(0)
	if err := db.migrate(ctx); err != nil {
		db.w.Close()
		return nil, err
	}
	if db.id, err = db.initMeta(ctx); err != nil {
		db.w.Close()
		return nil, err
	}
	// The migrations' commits synced themselves; from now on the syncer
	// syncs the writer's commits (see durable.go).
	var log *walvfs.Log
	if syncMode == "FULL" {
		if log, err = walvfs.FindLog(path + "-wal"); err != nil {
			db.log.Warn("sqlite: commits will wait for their own sync", "err", err)
			log = nil
		}
	}
	db.sync = newSyncer(log)
	if err := db.startCheckpointer(syncMode, opts.OnCheckpoint); err != nil {
		db.sync.close()
		db.w.Close()
		return nil, err
	}

	db.r, err = sql.Open("sqlite", dsn(path, syncMode, readerConn))
	if err != nil {
		db.sync.close()
		db.ckpt.close()
		db.w.Close()
		return nil, fmt.Errorf("sqlite: open %s for reading: %w", path, err)
	}
	readers := max(4, 2*runtime.GOMAXPROCS(0))
	db.r.SetMaxOpenConns(readers)
	db.r.SetMaxIdleConns(readers)
	if err := db.r.PingContext(ctx); err != nil {
		db.sync.close()
		db.ckpt.close()
		db.w.Close()
		db.r.Close()
		return nil, fmt.Errorf("sqlite: open %s for reading: %w", path, err)
	}

	db.enqueue = make(chan *enqueueRequest, 4*db.maxBatch)
	db.updates = make(chan *updateRequest, 4*db.maxBatch)
	db.updateLeader = make(chan struct{}, 1)
	go db.commitLoop()
	return db, nil
}

// connRole says what a connection is for.
type connRole int

const (
	writerConn connRole = iota
	checkpointerConn
	readerConn
)

// dsn builds the driver's data source name. Journal mode and synchronous are
// set on every connection; only the writer takes its lock at BEGIN (so a
// transaction never fails half way to upgrade), and readers are query-only
// so a bug cannot write outside the writer's lock. The writer never
// checkpoints: the checkpointer does (see checkpoint.go). Under
// synchronous=FULL, writing connections open the database through walvfs,
// which writes the WAL in one system call per commit instead of two per
// page and reads the WAL and the database file from memory maps; the
// writer uses its pipelined VFS, whose commits leave their sync to the
// syncer (see durable.go).
func dsn(path, synchronous string, role connRole) string {
	readOnly := role == readerConn
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous("+synchronous+")")
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Set("_txlock", "immediate")
		q.Add("_pragma", "wal_autocheckpoint(0)")
		switch {
		case synchronous == "FULL" && role == writerConn:
			q.Set("vfs", walvfs.PipeName)
		case synchronous == "FULL":
			q.Set("vfs", walvfs.Name)
		}
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// migration is one numbered schema file.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the embedded migrations, in version order. Files are
// named NNNN_description.sql; a gap or a repeated number is a bug.
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
			return nil, fmt.Errorf("sqlite: migration %q is not named NNNN_name.sql", e.Name())
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
			return nil, fmt.Errorf("sqlite: migration %s out of sequence (want version %d)", m.name, i+1)
		}
	}
	return ms, nil
}

// migrate applies every migration the database has not seen, each in its own
// transaction with its record in schema_migrations, so a failed migration
// leaves the schema as it was.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	if _, err := db.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_ns INTEGER NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("sqlite: create schema_migrations: %w", err)
	}
	var current int
	if err := db.w.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("sqlite: read schema version: %w", err)
	}
	if current > len(ms) {
		return fmt.Errorf("sqlite: database schema version %d is newer than this program knows (%d)", current, len(ms))
	}
	for _, m := range ms[current:] {
		err := func() error {
			tx, err := db.w.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return err
			}
			if err := runMigrationFix(ctx, tx, m.name, db.log); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_ns) VALUES (?, ?, ?)`,
				m.version, m.name, db.now().UnixNano()); err != nil {
				return err
			}
			return tx.Commit()
		}()
		if err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", m.name, err)
		}
		db.log.Info("sqlite migration applied", "migration", m.name)
	}
	return nil
}

// Meta keys.
const (
	metaStoreID   = "store_id"
	metaCompacted = "changes_compacted"
)

// initMeta creates the store id on first open and returns it.
func (db *DB) initMeta(ctx context.Context) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	if _, err := db.w.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?), (?, 0) ON CONFLICT (key) DO NOTHING`,
		metaStoreID, hex.EncodeToString(b[:]), metaCompacted); err != nil {
		return "", fmt.Errorf("sqlite: init meta: %w", err)
	}
	var id string
	if err := db.w.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, metaStoreID).Scan(&id); err != nil {
		return "", fmt.Errorf("sqlite: read store id: %w", err)
	}
	return id, nil
}

// ID returns the store id, created at the database's first open.
func (db *DB) ID() string { return db.id }

// Close waits for calls under way, commits the deliveries already queued,
// and closes the database. Calls after Close return [store.ErrClosed]; a
// second Close returns nil.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		// After the gate is shut no call is inside the store, so nobody can
		// send on db.enqueue any more.
		db.gate.Shut()
		close(db.enqueue)
		<-db.committerDone
		// Let SQLite refresh the planner statistics it finds stale, as its
		// documentation advises before closing a long-lived connection.
		if _, err := db.w.Exec(`PRAGMA optimize`); err != nil {
			db.log.Warn("sqlite: optimize at close failed", "err", err)
		}
		db.closeErr = errors.Join(db.sync.close(), db.closeWriterStmts(), db.readStmts.close(), db.ckpt.close(), db.r.Close(), db.w.Close())
	})
	return db.closeErr
}

// enter admits a call unless the store is closed; the call must leave.
func (db *DB) enter() error {
	if !db.gate.Enter() {
		return store.ErrClosed
	}
	return nil
}

func (db *DB) leave() { db.gate.Leave() }

// lockWriter takes the writer lock, or gives up when ctx is done.
func (db *DB) lockWriter(ctx context.Context) error {
	select {
	case db.wlock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// unlockWriter releases the writer lock and tells the checkpointer the WAL
// may have grown.
func (db *DB) unlockWriter() {
	<-db.wlock
	db.ckpt.wrote()
}

// writeTx runs fn in a write transaction on the writer connection, below
// database/sql (see connquery.go). The caller holds the writer lock. The
// commit is visible when writeTx returns but not yet durable: whatever
// depends on it waits for the syncer (db.sync.whenDurable or waitDurable).
func (db *DB) writeTx(ctx context.Context, fn func(*connQuerier) error) error {
	if err := db.sync.waitBacklog(); err != nil {
		return err
	}
	conn, err := db.w.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		q, err := db.wstmts.querier(dc)
		if err != nil {
			return err
		}
		// BEGIN IMMEDIATE, as the writer's DSN asks of database/sql's
		// transactions: the write lock is taken now, not at the first write.
		if _, err := q.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
			return fmt.Errorf("sqlite: begin: %w", err)
		}
		if err := fn(q); err != nil {
			q.rollback()
			return err
		}
		err = db.sync.commit(func() error {
			_, err := q.ExecContext(ctx, "COMMIT")
			if err != nil {
				// A COMMIT that failed may have left the transaction
				// open (SQLITE_BUSY does): the connection must come out
				// of it clean.
				q.rollback()
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("sqlite: commit: %w", err)
		}
		return nil
	})
}

// write takes the writer lock and runs fn in a write transaction, and
// returns once its commit is durable.
func (db *DB) write(ctx context.Context, fn func(*connQuerier) error) error {
	if err := db.lockWriter(ctx); err != nil {
		return err
	}
	err := db.writeTx(ctx, fn)
	db.unlockWriter()
	if err != nil {
		return err
	}
	db.sync.flush()
	// Not ctx: the commit is done, and its caller may not be told so
	// before it is durable.
	return db.sync.waitDurable(context.Background())
}

// readOne runs fn, whose reads are each one statement, on the read pool
// outside any transaction (one statement reads one snapshot; a read
// transaction would add a BEGIN and a ROLLBACK to parse and run), through
// statements kept prepared after their first use. Reads that must agree
// with each other use read.
func (db *DB) readOne(ctx context.Context, fn func(querier) error) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	defer db.readStmts.prepareWanted(ctx, db.r)
	if err := fn(poolQuerier{db: db.r, cache: db.readStmts}); err != nil {
		return err
	}
	return db.sync.waitVisible(ctx)
}

// read runs fn in a read transaction: every query in fn sees the same
// snapshot of the database, taken at its first query.
func (db *DB) read(ctx context.Context, fn func(*sql.Tx) error) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("sqlite: begin read: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	// Nothing read leaves the store before it is durable.
	return db.sync.waitVisible(ctx)
}
