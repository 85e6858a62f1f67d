package walvfs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// pages returns n bytes that differ from offset to offset.
func pages(n int, salt byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i) ^ byte(i>>8) ^ salt
	}
	return b
}

func openTestView(t *testing.T, f *os.File) (int32, *view) {
	t.Helper()
	id := openView(int(f.Fd()))
	if id == 0 {
		t.Fatal("openView gave no view")
	}
	t.Cleanup(func() { closeView(id) })
	return id, viewOf(id)
}

// TestViewReadsWhatTheFileHolds: a view reads the file's bytes, also those
// written after it was mapped, and nothing it does not know the file holds.
func TestViewReadsWhatTheFileHolds(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "t.db-wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first := pages(3*4096, 1)
	if _, err := f.WriteAt(first, 0); err != nil {
		t.Fatal(err)
	}
	_, v := openTestView(t, f)

	dst := make([]byte, 4096+24)
	if !v.read(dst, 4096-24) || !bytes.Equal(dst, first[4096-24:2*4096]) {
		t.Fatal("a read inside the file did not give the file's bytes")
	}

	// Bytes written after the map, and over bytes already read.
	more := pages(4096, 2)
	if _, err := f.WriteAt(more, 3*4096); err != nil {
		t.Fatal(err)
	}
	if v.read(dst[:4096], 3*4096) {
		t.Fatal("the view read bytes it was not told the file holds")
	}
	v.grew(4 * 4096)
	if !v.read(dst[:4096], 3*4096) || !bytes.Equal(dst[:4096], more) {
		t.Fatal("a read of bytes written after the map did not give them")
	}
	over := pages(100, 3)
	if _, err := f.WriteAt(over, 50); err != nil {
		t.Fatal(err)
	}
	if !v.read(dst[:100], 50) || !bytes.Equal(dst[:100], over) {
		t.Fatal("a read of bytes written over did not give the new ones")
	}

	if v.read(dst[:10], 4*4096-5) || v.read(dst[:10], -1) {
		t.Fatal("the view read past what the file holds")
	}
	v.cut(4096)
	if v.read(dst[:10], 4096) {
		t.Fatal("the view read past a cut")
	}
	if !v.read(dst[:10], 4096-10) {
		t.Fatal("the view refused a read before a cut")
	}
}

// TestViewSurvivesAFileCutBehindItsBack: when another writer shortens the
// file without the view knowing, a read of the missing bytes faults; the
// read reports that it could not read (the caller then reads the file) and
// the process goes on.
func TestViewSurvivesAFileCutBehindItsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db-wal")
	if err := os.WriteFile(path, pages(16*4096, 4), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, v := openTestView(t, f)
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, 4096)
	if v.read(dst, 8*4096) {
		t.Fatal("a read past the file's real end reported success")
	}
	if !v.read(dst, 0) || !bytes.Equal(dst, pages(16*4096, 4)[:4096]) {
		t.Fatal("a read of what is left did not give it")
	}
}

// TestViewIsSharedByTheFilesHandles: handles of one file share a view,
// which is unmapped when the last one lets go of it.
func TestViewIsSharedByTheFilesHandles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db-wal")
	if err := os.WriteFile(path, pages(4096, 5), 0o600); err != nil {
		t.Fatal(err)
	}
	var ids []int32
	for range 2 {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		id := openView(int(f.Fd()))
		if id == 0 {
			t.Fatal("openView gave no view")
		}
		ids = append(ids, id)
	}
	a, b := viewOf(ids[0]), viewOf(ids[1])
	if a != b || a.refs != 2 {
		t.Fatalf("two handles of one file got views %p and %p (%d handles)", a, b, a.refs)
	}
	closeView(ids[0])
	dst := make([]byte, 10)
	if viewOf(ids[0]) != nil || !b.read(dst, 0) {
		t.Fatal("after one handle let go, the other could not read")
	}
	closeView(ids[1])
	views.Lock()
	_, mapped := views.byFile[a.key]
	views.Unlock()
	if mapped || viewOf(ids[1]) != nil {
		t.Fatal("the file is still mapped after its last handle let go")
	}
}
