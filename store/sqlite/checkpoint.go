package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Checkpoints: copying the WAL's pages back into the database file.
//
// SQLite's default runs a checkpoint inside the commit that takes the WAL
// past 1,000 pages, so every thousandth page written stalls the writer, and
// with it the group committer and every webhook waiting on it, for as long
// as copying takes. Here the writer never checkpoints (wal_autocheckpoint is
// off on its connection): a checkpointer goroutine does it on a connection
// of its own while the writer keeps committing.
//
// A checkpoint that runs beside the writer copies the frames committed
// before it started. SQLite starts the WAL over only when a write begins
// with every frame copied, which under a load that never pauses may not
// happen, so the WAL would grow without end. Once the WAL is longer than
// walForceFrames, the checkpointer therefore runs the next checkpoint
// holding the writer lock: nothing is appended while it copies the few
// frames left, and the next commit starts the WAL over. A reader that still
// needs old frames (one slow read transaction) keeps the WAL from starting
// over until it ends, as it would under SQLite's own checkpoints.
const (
	// checkpointInterval is the least time between two checkpoints.
	checkpointInterval = 200 * time.Millisecond
	// walForceFrames is the WAL length, in pages, beyond which a checkpoint
	// holds the writer lock.
	walForceFrames = 16384
	// lockedFrames is about the most frames a checkpoint copies under the
	// writer lock; maxCatchUpPasses bounds the passes beside the writer
	// that get it there.
	lockedFrames     = 256
	maxCatchUpPasses = 4
)

// checkpointer runs the database's checkpoints; see above.
type checkpointer struct {
	db       *DB
	conn     *sql.DB
	interval time.Duration
	force    int
	// nudge is signalled after every write transaction; stop closes to end
	// the loop, and done closes when it has.
	nudge    chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	// observe, if set, sees every checkpoint's outcome (Options.OnCheckpoint).
	observe func(logFrames, copied int, forced bool)
	// warned limits the failure warnings to one a minute.
	warned rate.Sometimes
}

// startCheckpointer opens the checkpointer's connection and starts its loop.
func (db *DB) startCheckpointer(syncMode string, observe func(logFrames, copied int, forced bool)) error {
	conn, err := sql.Open("sqlite", dsn(db.path, syncMode, checkpointerConn))
	if err != nil {
		return fmt.Errorf("sqlite: open %s for checkpoints: %w", db.path, err)
	}
	conn.SetMaxOpenConns(1)
	conn.SetMaxIdleConns(1)
	conn.SetConnMaxLifetime(0)
	conn.SetConnMaxIdleTime(0)
	if err := conn.Ping(); err != nil {
		conn.Close()
		return fmt.Errorf("sqlite: open %s for checkpoints: %w", db.path, err)
	}
	db.ckpt = &checkpointer{
		db:       db,
		conn:     conn,
		interval: checkpointInterval,
		force:    walForceFrames,
		observe:  observe,
		warned:   rate.Sometimes{First: 1, Interval: time.Minute},
		nudge:    make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go db.ckpt.loop()
	return nil
}

// wrote tells the checkpointer that the WAL may have grown. It never blocks.
func (c *checkpointer) wrote() {
	select {
	case c.nudge <- struct{}{}:
	default:
	}
}

func (c *checkpointer) loop() {
	defer close(c.done)
	// The interval is a rate limit, not a wait for anything: a page written
	// again and again within it is copied once.
	pace := time.NewTimer(0)
	defer pace.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.nudge:
		}
		select {
		case <-c.stop:
			return
		case <-pace.C:
		}
		c.checkpoint()
		pace.Reset(c.interval)
	}
}

// checkpoint copies what the WAL holds beyond the last checkpoint. If the
// WAL has grown too long, it copies again until the frames added meanwhile
// are few, and copies those under the writer lock, which then waits for
// little more than one fsync.
func (c *checkpointer) checkpoint() {
	logFrames, copied, err := c.run()
	forced := err == nil && logFrames > c.force
	for pass := 0; forced && pass < maxCatchUpPasses; pass++ {
		before := copied
		if logFrames, copied, err = c.run(); err != nil || logFrames-before <= lockedFrames {
			break
		}
	}
	if forced && err == nil {
		c.db.wlock <- struct{}{}
		logFrames, copied, err = c.run()
		<-c.db.wlock
	}
	if err != nil {
		// Writes fail too when checkpoints do (a full or failing disk):
		// say so now and then, not after every commit.
		c.warned.Do(func() { c.db.log.Warn("sqlite: checkpoint failed", "forced", forced, "err", err) })
		return
	}
	if c.observe != nil {
		c.observe(logFrames, copied, forced)
	}
}

// run is one PASSIVE checkpoint: it copies every frame no reader still
// needs, without waiting for anyone. It returns the WAL's length and how
// many of its frames are now in the database file.
func (c *checkpointer) run() (logFrames, copied int, err error) {
	var busy int
	err = c.conn.QueryRowContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logFrames, &copied)
	return logFrames, copied, err
}

// stopLoop stops the loop and waits for it; a second call does nothing.
func (c *checkpointer) stopLoop() {
	c.stopOnce.Do(func() { close(c.stop) })
	<-c.done
}

// close stops the loop and closes the connection. The last connection to
// close copies the whole WAL back, as SQLite always does.
func (c *checkpointer) close() error {
	c.stopLoop()
	return c.conn.Close()
}
