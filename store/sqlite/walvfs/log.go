package walvfs

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	sqlite3 "modernc.org/sqlite/lib"
)

// PipeName is the name of the VFS a database's single writing connection
// opens it through when its owner syncs the write-ahead log itself, after
// the commit (see [Log]). It is [Name]'s VFS otherwise.
const PipeName = "calsync-walpipe"

// Log is a write-ahead log opened through [PipeName], whose commits can
// leave their sync to the caller: inside [Log.Defer], the sync SQLite asks
// for at the end of a commit writes the commit's frames to the file and
// returns without waiting for the disk. The commit is then visible to
// every connection but not yet durable; [Log.Sync], called from any
// goroutine, makes it durable. Meanwhile the writer may run its next
// transaction, which is what a commit pipeline needs: one transaction's
// sync overlaps the next one's work.
//
// What stays as SQLite does it: a sync outside Defer, a checkpoint's sync
// (on the checkpointing connection's own handle of the log, which syncs
// before it copies anything into the database file) and the sync of a new
// log header (which SQLite needs on disk before the frames behind it) are
// never deferred. A log closed with a deferred sync outstanding syncs
// first.
type Log struct {
	mu   sync.Mutex
	file *os.File // a duplicate of SQLite's descriptor of the log
	ino  uint64
	dev  uint64
	// armed is set inside Defer; deferred once a commit's sync was left
	// to Sync.
	armed, deferred atomic.Bool
}

// logs are the open Logs, by the id their logFile holds (SQLite's memory
// holds no Go pointers).
var logs struct {
	sync.Mutex
	byID map[int32]*Log
	next int32
}

// openLog registers the log just opened at pFile and returns its id, or 0
// if its descriptor could not be duplicated: that log syncs every commit
// itself, as through Name.
func openLog(pFile uintptr) int32 {
	fd := (*sqlite3.TunixFile)(ptr(pFile + headerSize)).Fh
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	var st unix.Stat_t
	if err := unix.Fstat(dup, &st); err != nil {
		unix.Close(dup)
		return 0
	}
	l := &Log{file: os.NewFile(uintptr(dup), "wal"), ino: uint64(st.Ino), dev: uint64(st.Dev)}
	logs.Lock()
	defer logs.Unlock()
	if logs.byID == nil {
		logs.byID = make(map[int32]*Log)
	}
	logs.next++
	logs.byID[logs.next] = l
	return logs.next
}

func lookupLog(id int32) *Log {
	logs.Lock()
	defer logs.Unlock()
	return logs.byID[id]
}

// deferSync reports whether the commit syncing log id leaves its sync to
// the caller of Defer.
func deferSync(id int32) bool {
	l := lookupLog(id)
	if l == nil || !l.armed.Load() {
		return false
	}
	l.deferred.Store(true)
	return true
}

// closeLog unregisters log id, syncing it first if a commit left its sync.
func closeLog(id int32) error {
	logs.Lock()
	l := logs.byID[id]
	delete(logs.byID, id)
	logs.Unlock()
	if l == nil {
		return nil
	}
	err := l.Sync()
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(err, l.file.Close())
}

// FindLog returns the open Log of the write-ahead log at path (a database's
// path followed by "-wal"), which a connection opened through PipeName
// has open.
func FindLog(path string) (*Log, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("walvfs: %w", err)
	}
	logs.Lock()
	defer logs.Unlock()
	for _, l := range logs.byID {
		if l.ino == uint64(st.Ino) && l.dev == uint64(st.Dev) {
			return l, nil
		}
	}
	return nil, fmt.Errorf("walvfs: no connection has %s open through %s", path, PipeName)
}

// Defer runs commit, a COMMIT on the connection that opened the log, with
// its sync left to [Log.Sync]. The caller must not let anything depend on
// the commit being durable (an answer to a client, a notification) before
// a Sync called after Defer returned has returned nil.
func (l *Log) Defer(commit func() error) error {
	l.armed.Store(true)
	defer l.armed.Store(false)
	return commit()
}

// Sync makes every commit whose sync was deferred before the call durable.
// It returns at once if there is none. It is safe to call from any
// goroutine, while the writer commits. An error means those commits may
// not be on disk, and a later Sync cannot tell: the caller must stop
// writing (as PostgreSQL does, it may not retry).
func (l *Log) Sync() error {
	if !l.deferred.Swap(false) {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	syncs.Add(1)
	if err := l.file.Sync(); err != nil {
		return fmt.Errorf("walvfs: sync of the write-ahead log: %w", err)
	}
	return nil
}
