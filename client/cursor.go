package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// CursorStore keeps a watch's position so it can resume where it stopped.
// [Client.Watch] loads it once when it starts and saves a new cursor after
// each handled change or bookmark, from one goroutine.
type CursorStore interface {
	// Load returns the saved cursor, or "" when none was saved.
	Load(ctx context.Context) (string, error)
	// Save records cursor durably enough for the caller's needs before it
	// returns: what it returns is what Load answers after a crash.
	Save(ctx context.Context, cursor string) error
}

// MemoryCursorStore keeps the cursor in memory: a watch resumes across
// reconnections, but not across processes. Its zero value is empty and ready.
type MemoryCursorStore struct {
	mu     sync.Mutex
	cursor string
}

// Load returns the last saved cursor.
func (m *MemoryCursorStore) Load(context.Context) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cursor, nil
}

// Save keeps cursor.
func (m *MemoryCursorStore) Save(_ context.Context, cursor string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cursor = cursor
	return nil
}

// FileCursorStore keeps the cursor in a file, replaced atomically: Save
// writes a temporary file beside it, syncs it, renames it over the file and
// syncs the directory, so after a crash or power loss the file holds either
// the previous cursor or the new one, never a torn one. Each Save costs two
// fsyncs.
type FileCursorStore struct {
	path string
}

// NewFileCursorStore returns a store keeping the cursor in the file at path.
// The file need not exist; its directory must.
func NewFileCursorStore(path string) *FileCursorStore { return &FileCursorStore{path: path} }

// Path returns the file the cursor is kept in.
func (f *FileCursorStore) Path() string { return f.path }

// Load reads the cursor; a missing file means no cursor.
func (f *FileCursorStore) Load(context.Context) (string, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Save replaces the file's content with cursor, atomically and durably.
func (f *FileCursorStore) Save(_ context.Context, cursor string) error {
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return err
	}
	// Remove fails harmlessly once the rename moved the file.
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(cursor + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return err
	}
	// The rename is durable only once the directory entry is.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
