package walvfs

import (
	"runtime/debug"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reads of a log and of a database file come from memory, not from a read
// system call each.
//
// SQLite reads a page at a time: the writer when a page it needs is not in
// its cache (from the log if the log holds the page, else from the database
// file), and a checkpoint for every frame of the log it copies into the
// database file. Each read was a pread of one page. Instead, the process's
// open handles of a file share a view: a read-only shared memory map of the
// file, from which a read is a copy.
//
// A shared map shows what the file holds now, writes of any handle
// included (the kernel keeps one copy of a file's pages). A map gives no
// error for a range past the file's end, though: touching it raises
// SIGBUS. So a view knows how long the file is, from its size when opened,
// every write through this VFS and every truncate; a read it cannot be
// sure of, past that length or past the map, goes to the file as before.
// If the file was cut behind the VFS's back (another process, or a
// connection of another VFS, truncating it), the fault becomes a panic
// that the read recovers from, and the read goes to the file too.
//
// The map reserves address space, not memory: the pages it shows are the
// file's pages in the kernel's cache, which the file occupies in any case.
// They count in the process's resident set once touched.

// viewLen is the length of a view's map. A log is far shorter (the store
// checkpoints it at a few tens of MB); in a database file larger than
// this, reads past viewLen go to the file.
const viewLen = 1 << 30

// view is one file's map, shared by every handle of it in the process.
type view struct {
	mem []byte
	// size is how much of the file the view may read: never more than
	// the file holds, unless the file was cut behind the VFS's back.
	size atomic.Int64
	key  fileKey
	refs int
}

type fileKey struct{ dev, ino uint64 }

// views are the open views, by the id a logFile holds (SQLite's memory
// holds no Go pointers) and by file.
var views struct {
	sync.Mutex
	byID   map[int32]*view
	byFile map[fileKey]*view
	next   int32
}

// openView returns the id of the view of the file open at fd, mapping it if
// no other handle has: 0 if it cannot be mapped (then every read goes to
// the file).
func openView(fd int) int32 {
	if unsafe.Sizeof(uintptr(0)) < 8 {
		return 0 // too little address space to reserve
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0
	}
	key := fileKey{dev: uint64(st.Dev), ino: uint64(st.Ino)}
	views.Lock()
	defer views.Unlock()
	v := views.byFile[key]
	if v == nil {
		mem, err := unix.Mmap(fd, 0, viewLen, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return 0
		}
		v = &view{mem: mem, key: key}
		if views.byFile == nil {
			views.byFile = make(map[fileKey]*view)
			views.byID = make(map[int32]*view)
		}
		views.byFile[key] = v
	}
	v.grew(st.Size)
	v.refs++
	views.next++
	views.byID[views.next] = v
	return views.next
}

// viewOf returns view id, or nil for 0.
func viewOf(id int32) *view {
	if id == 0 {
		return nil
	}
	views.Lock()
	defer views.Unlock()
	return views.byID[id]
}

// closeView lets go of view id; the last handle of a file unmaps it. A
// handle only reads through its own view, and never after its close, so
// nothing reads a map that is gone.
func closeView(id int32) {
	if id == 0 {
		return
	}
	views.Lock()
	defer views.Unlock()
	v := views.byID[id]
	delete(views.byID, id)
	if v == nil {
		return
	}
	if v.refs--; v.refs == 0 {
		delete(views.byFile, v.key)
		unix.Munmap(v.mem)
	}
}

// grew records that the file holds at least end bytes.
func (v *view) grew(end int64) {
	for {
		size := v.size.Load()
		if end <= size || v.size.CompareAndSwap(size, end) {
			return
		}
	}
}

// cut records that the file may hold as little as size bytes.
func (v *view) cut(size int64) {
	for {
		cur := v.size.Load()
		if size >= cur || v.size.CompareAndSwap(cur, size) {
			return
		}
	}
}

// read copies the file's bytes at off into dst and reports whether it
// could; if not, dst may hold part of them and the caller reads the file.
func (v *view) read(dst []byte, off int64) (ok bool) {
	end := off + int64(len(dst))
	if off < 0 || end > v.size.Load() || end > int64(len(v.mem)) {
		return false
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if _, fault := r.(interface{ Addr() uintptr }); !fault {
				panic(r)
			}
			ok = false
		}
	}()
	copy(dst, v.mem[off:end])
	viewReads.Add(1)
	return true
}
