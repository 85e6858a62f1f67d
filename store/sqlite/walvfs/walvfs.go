// Package walvfs registers a SQLite VFS that writes a transaction's WAL frames
// with one system call instead of two per frame.
//
// SQLite appends each page it commits to the write-ahead log as a 24-byte
// frame header and the page, one write call each, and then syncs the log.
// Writes to the log that the sync has not yet covered promise nothing: a
// crash may lose them, and no other connection reads a frame before the
// commit that wrote it has synced and published it in the WAL index. So this
// VFS holds a WAL's consecutive writes in memory and hands them to the file
// system in one write just before anything can depend on them: before the
// sync, before a read of the held range, a size, a truncate, a file control
// and the close.
//
// Reads of the log and of the database file come from a shared memory map
// of the file instead of a read system call each (see view.go). Everything
// else (journals, temporary files, and every other method of the log and
// the database file) goes straight to the default VFS.
//
// Durability is unchanged under synchronous=FULL, where every commit syncs the
// log: a commit still returns only after its frames are written and synced.
// The VFS must not be used with synchronous=NORMAL or OFF, where a commit
// publishes frames that were never synced and so might still be held here.
//
// Open a database through it with the driver's DSN parameter vfs=[Name].
// A database's writer may instead open it through vfs=[PipeName], which also
// lets the caller take the log's sync out of the commit (see [Log]).
package walvfs

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// Name is the name the VFS is registered under.
const Name = "calsync-walbuffer"

// maxHeld bounds the bytes one log holds before it writes them out: a
// commit of a few hundred webhooks fits, and a large transaction streams.
const maxHeld = 1 << 20

// maxWrite is the most one call to the default VFS's write is given: the
// unix VFS cuts a write's length to 17 bits, so a longer one would fail as
// a short write (SQLITE_FULL).
const maxWrite = 124 << 10

var (
	registerOnce sync.Once
	registerErr  error

	// base is the default VFS every call is forwarded to; pipeVFS is the
	// one registered as PipeName.
	base, pipeVFS uintptr

	// logMethods and dbMethods, the methods of a log and of a database
	// file, are in SQLite's memory, as is the VFS itself (SQLite links it
	// into its list); all live as long as the process.
	logMethods, dbMethods uintptr

	// flushes, heldWrites, syncs and viewReads count what the VFS did,
	// for its tests.
	flushes, heldWrites, syncs, viewReads atomic.Int64
)

// logFile is an open write-ahead log as SQLite sees it: its own header,
// followed by the default VFS's file, which does the real work. held bytes,
// starting at file offset start, are waiting in buf (C memory of size cap).
// A database file has the same header, of which it only uses view.
type logFile struct {
	base  sqlite3.Tsqlite3_file
	buf   uintptr
	cap   int64
	start int64
	held  int64
	// log is the [Log] of a log opened through PipeName (0: none), and
	// header is set while a write of the log's header has not been synced.
	log    int32
	header int32
	// view is the id of the log's view (0: none; see view.go).
	view int32
}

// headerSize is where the default VFS's file starts inside a logFile; a
// multiple of 8 keeps that file aligned.
const headerSize = (unsafe.Sizeof(logFile{}) + 7) &^ 7

// Register registers the VFS once per process; later calls return the first
// call's result. It does not become the default VFS.
func Register() error {
	registerOnce.Do(func() { registerErr = register() })
	return registerErr
}

func register() error {
	tls := libc.NewTLS()
	defer tls.Close()
	base = sqlite3.Xsqlite3_vfs_find(tls, 0)
	if base == 0 {
		return errNoDefault
	}
	name, err := libc.CString(Name)
	if err != nil {
		return err
	}
	p := libc.Xcalloc(tls, 1, libc.Tsize_t(unsafe.Sizeof(sqlite3.Tsqlite3_vfs{})))
	logMethods = libc.Xcalloc(tls, 1, libc.Tsize_t(unsafe.Sizeof(sqlite3.Tsqlite3_io_methods{})))
	dbMethods = libc.Xcalloc(tls, 1, libc.Tsize_t(unsafe.Sizeof(sqlite3.Tsqlite3_io_methods{})))
	if p == 0 || logMethods == 0 || dbMethods == 0 {
		return errNoMemory
	}
	b := (*sqlite3.Tsqlite3_vfs)(ptr(base))
	vfs := (*sqlite3.Tsqlite3_vfs)(ptr(p))
	*vfs = sqlite3.Tsqlite3_vfs{
		FiVersion:   2,
		FszOsFile:   b.FszOsFile + int32(headerSize),
		FmxPathname: b.FmxPathname,
		FzName:      name,
		// The default VFS's own methods that take no file: they get the
		// default VFS as their first argument, never this one.
		FxDlOpen:  b.FxDlOpen,
		FxDlError: b.FxDlError,
		FxDlSym:   b.FxDlSym,
		FxDlClose: b.FxDlClose,
	}
	setFunc(&vfs.FxOpen, vfsOpen)
	setFunc(&vfs.FxDelete, vfsDelete)
	setFunc(&vfs.FxAccess, vfsAccess)
	setFunc(&vfs.FxFullPathname, vfsFullPathname)
	setFunc(&vfs.FxRandomness, vfsRandomness)
	setFunc(&vfs.FxSleep, vfsSleep)
	setFunc(&vfs.FxCurrentTime, vfsCurrentTime)
	setFunc(&vfs.FxGetLastError, vfsGetLastError)
	setFunc(&vfs.FxCurrentTimeInt64, vfsCurrentTimeInt64)

	m := (*sqlite3.Tsqlite3_io_methods)(ptr(logMethods))
	setForwarders(m)
	setFunc(&m.FxClose, logClose)
	setFunc(&m.FxRead, logRead)
	setFunc(&m.FxWrite, logWrite)
	setFunc(&m.FxTruncate, logTruncate)
	setFunc(&m.FxSync, logSync)
	setFunc(&m.FxFileSize, logFileSize)
	setFunc(&m.FxFileControl, logFileControl)
	setFunc(&m.FxFetch, logFetch)
	setDBMethods((*sqlite3.Tsqlite3_io_methods)(ptr(dbMethods)))

	if rc := sqlite3.Xsqlite3_vfs_register(tls, p, 0); rc != sqlite3.SQLITE_OK {
		return &registerError{rc: rc}
	}
	// The pipelined VFS is the same VFS under another name: its own
	// struct, so vfsOpen can tell which one a file is opened through.
	pipeName, err := libc.CString(PipeName)
	if err != nil {
		return err
	}
	if pipeVFS = libc.Xcalloc(tls, 1, libc.Tsize_t(unsafe.Sizeof(sqlite3.Tsqlite3_vfs{}))); pipeVFS == 0 {
		return errNoMemory
	}
	pv := (*sqlite3.Tsqlite3_vfs)(ptr(pipeVFS))
	*pv = *vfs
	pv.FpNext = 0
	pv.FzName = pipeName
	if rc := sqlite3.Xsqlite3_vfs_register(tls, pipeVFS, 0); rc != sqlite3.SQLITE_OK {
		return &registerError{rc: rc}
	}
	return nil
}

// vfsOpen opens every file through the default VFS. A log or a database
// file is wrapped in a logFile; any other file is the default VFS's file,
// placed where SQLite expects its own.
func vfsOpen(tls *libc.TLS, pVfs uintptr, zName uintptr, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	open := baseMethod[func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32](offOpen)
	isLog := flags&sqlite3.SQLITE_OPEN_WAL != 0
	if !isLog && flags&sqlite3.SQLITE_OPEN_MAIN_DB == 0 {
		return open(tls, base, zName, pFile, flags, pOutFlags)
	}
	f := (*logFile)(ptr(pFile))
	*f = logFile{}
	inner(pFile).FpMethods = 0
	rc := open(tls, base, zName, pFile+headerSize, flags, pOutFlags)
	// SQLite closes a file whose methods are set even when its open
	// failed; the default VFS's file then gets its close through ours.
	if inner(pFile).FpMethods != 0 {
		f.base.FpMethods = logMethods
		if !isLog {
			f.base.FpMethods = dbMethods
		}
	}
	if rc == sqlite3.SQLITE_OK {
		f.view = openView(int((*sqlite3.TunixFile)(ptr(pFile + headerSize)).Fh))
		if isLog && pVfs == pipeVFS {
			f.log = openLog(pFile)
		}
	}
	return rc
}

// flush writes what the log holds. After a failed write the held frames
// are dropped: SQLite fails the commit they belong to and writes them again.
func flush(tls *libc.TLS, pFile uintptr) int32 {
	f := (*logFile)(ptr(pFile))
	held := f.held
	f.held = 0
	flushes.Add(1)
	return writeOut(tls, pFile, f.buf, held, f.start)
}

// writeOut writes n bytes at buf to the log at offset off through the
// default VFS, in pieces it takes in one call.
func writeOut(tls *libc.TLS, pFile uintptr, buf uintptr, n, off int64) int32 {
	for done := int64(0); done < n; done += maxWrite {
		if rc := viewWrite(tls, pFile, buf+uintptr(done), int32(min(n-done, maxWrite)), off+done); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	return sqlite3.SQLITE_OK
}

// logWrite appends to what the log holds when the write continues it, and
// otherwise writes out what is held first: writes reach the file in the
// order SQLite made them.
func logWrite(tls *libc.TLS, pFile uintptr, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	f := (*logFile)(ptr(pFile))
	amt := int64(iAmt)
	if f.held > 0 && (iOfst != f.start+f.held || f.held+amt > maxHeld) {
		if rc := flush(tls, pFile); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	if amt > maxHeld {
		// Not a frame (those are a page of at most 64 KiB and a header).
		return writeOut(tls, pFile, zBuf, amt, iOfst)
	}
	if f.held == 0 {
		f.start = iOfst
	}
	if iOfst == 0 {
		f.header = 1
	}
	if need := f.held + amt; need > f.cap {
		c := min(max(f.cap*2, 64<<10, need), maxHeld)
		p := libc.Xrealloc(tls, f.buf, libc.Tsize_t(c))
		if p == 0 {
			return sqlite3.SQLITE_NOMEM
		}
		f.buf, f.cap = p, c
	}
	copy(unsafe.Slice((*byte)(ptr(f.buf+uintptr(f.held))), amt), unsafe.Slice((*byte)(ptr(zBuf)), amt))
	f.held += amt
	heldWrites.Add(1)
	return sqlite3.SQLITE_OK
}

// logRead writes out what is held first only if the read overlaps it, and
// reads from the log's view when it can.
func logRead(tls *libc.TLS, pFile uintptr, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	f := (*logFile)(ptr(pFile))
	if f.held > 0 && iOfst < f.start+f.held && iOfst+int64(iAmt) > f.start {
		if rc := flush(tls, pFile); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	return viewRead(tls, pFile, zBuf, iAmt, iOfst)
}

// logSync writes out what is held and syncs the log, unless the log is a
// [Log] whose owner takes this sync out of the commit (see [Log.Defer]).
// A sync that follows a write of the log's header is never deferred:
// SQLite syncs a new header before writing frames behind it.
func logSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	if rc := flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	f := (*logFile)(ptr(pFile))
	if f.log != 0 && f.header == 0 && deferSync(f.log) {
		return sqlite3.SQLITE_OK
	}
	f.header = 0
	syncs.Add(1)
	return innerMethod[func(*libc.TLS, uintptr, int32) int32](pFile, offSync)(tls, pFile+headerSize, flags)
}

func logClose(tls *libc.TLS, pFile uintptr) int32 {
	rc := flush(tls, pFile)
	f := (*logFile)(ptr(pFile))
	if f.log != 0 {
		if err := closeLog(f.log); err != nil && rc == sqlite3.SQLITE_OK {
			rc = sqlite3.SQLITE_IOERR_FSYNC
		}
		f.log = 0
	}
	if f.buf != 0 {
		libc.Xfree(tls, f.buf)
		f.buf, f.cap = 0, 0
	}
	if rc2 := viewClose(tls, pFile); rc == sqlite3.SQLITE_OK {
		rc = rc2
	}
	return rc
}

func logTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	if rc := flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return viewTruncate(tls, pFile, size)
}

func logFileSize(tls *libc.TLS, pFile uintptr, pSize uintptr) int32 {
	if rc := flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return fwdFileSize(tls, pFile, pSize)
}

func logFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	if rc := flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return fwdFileControl(tls, pFile, op, pArg)
}

// setForwarders sets the methods that a log and a database file forward to
// the default VFS's file as they are: they neither read nor write the
// file's contents.
func setForwarders(m *sqlite3.Tsqlite3_io_methods) {
	m.FiVersion = 3
	setFunc(&m.FxLock, fwdLock)
	setFunc(&m.FxUnlock, fwdUnlock)
	setFunc(&m.FxCheckReservedLock, fwdCheckReservedLock)
	setFunc(&m.FxSectorSize, fwdSectorSize)
	setFunc(&m.FxDeviceCharacteristics, fwdDeviceCharacteristics)
	setFunc(&m.FxShmMap, fwdShmMap)
	setFunc(&m.FxShmLock, fwdShmLock)
	setFunc(&m.FxShmBarrier, fwdShmBarrier)
	setFunc(&m.FxShmUnmap, fwdShmUnmap)
	setFunc(&m.FxUnfetch, fwdUnfetch)
}

func fwdLock(tls *libc.TLS, pFile uintptr, lock int32) int32 {
	return innerMethod[func(*libc.TLS, uintptr, int32) int32](pFile, offLock)(tls, pFile+headerSize, lock)
}

func fwdUnlock(tls *libc.TLS, pFile uintptr, lock int32) int32 {
	return innerMethod[func(*libc.TLS, uintptr, int32) int32](pFile, offUnlock)(tls, pFile+headerSize, lock)
}

func fwdCheckReservedLock(tls *libc.TLS, pFile uintptr, pResOut uintptr) int32 {
	return innerMethod[func(*libc.TLS, uintptr, uintptr) int32](pFile, offCheckReservedLock)(tls, pFile+headerSize, pResOut)
}

func fwdSectorSize(tls *libc.TLS, pFile uintptr) int32 {
	return innerMethod[func(*libc.TLS, uintptr) int32](pFile, offSectorSize)(tls, pFile+headerSize)
}

func fwdDeviceCharacteristics(tls *libc.TLS, pFile uintptr) int32 {
	return innerMethod[func(*libc.TLS, uintptr) int32](pFile, offDeviceCharacteristics)(tls, pFile+headerSize)
}

func fwdShmMap(tls *libc.TLS, pFile uintptr, iPg, pgsz, bExtend int32, pp uintptr) int32 {
	return innerMethod[func(*libc.TLS, uintptr, int32, int32, int32, uintptr) int32](pFile, offShmMap)(tls, pFile+headerSize, iPg, pgsz, bExtend, pp)
}

func fwdShmLock(tls *libc.TLS, pFile uintptr, offset, n, flags int32) int32 {
	return innerMethod[func(*libc.TLS, uintptr, int32, int32, int32) int32](pFile, offShmLock)(tls, pFile+headerSize, offset, n, flags)
}

func fwdShmBarrier(tls *libc.TLS, pFile uintptr) {
	innerMethod[func(*libc.TLS, uintptr)](pFile, offShmBarrier)(tls, pFile+headerSize)
}

func fwdShmUnmap(tls *libc.TLS, pFile uintptr, deleteFlag int32) int32 {
	return innerMethod[func(*libc.TLS, uintptr, int32) int32](pFile, offShmUnmap)(tls, pFile+headerSize, deleteFlag)
}

func logFetch(tls *libc.TLS, pFile uintptr, iOfst int64, iAmt int32, pp uintptr) int32 {
	if rc := flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return fwdFetch(tls, pFile, iOfst, iAmt, pp)
}

func fwdUnfetch(tls *libc.TLS, pFile uintptr, iOfst int64, p uintptr) int32 {
	return innerMethod[func(*libc.TLS, uintptr, int64, uintptr) int32](pFile, offUnfetch)(tls, pFile+headerSize, iOfst, p)
}

// The VFS's methods that take no file forward to the default VFS with the
// default VFS as their first argument.

func vfsDelete(tls *libc.TLS, _ uintptr, zName uintptr, syncDir int32) int32 {
	return baseMethod[func(*libc.TLS, uintptr, uintptr, int32) int32](offDelete)(tls, base, zName, syncDir)
}

func vfsAccess(tls *libc.TLS, _ uintptr, zName uintptr, flags int32, pResOut uintptr) int32 {
	return baseMethod[func(*libc.TLS, uintptr, uintptr, int32, uintptr) int32](offAccess)(tls, base, zName, flags, pResOut)
}

func vfsFullPathname(tls *libc.TLS, _ uintptr, zName uintptr, nOut int32, zOut uintptr) int32 {
	return baseMethod[func(*libc.TLS, uintptr, uintptr, int32, uintptr) int32](offFullPathname)(tls, base, zName, nOut, zOut)
}

func vfsRandomness(tls *libc.TLS, _ uintptr, nByte int32, zOut uintptr) int32 {
	return baseMethod[func(*libc.TLS, uintptr, int32, uintptr) int32](offRandomness)(tls, base, nByte, zOut)
}

func vfsSleep(tls *libc.TLS, _ uintptr, micros int32) int32 {
	return baseMethod[func(*libc.TLS, uintptr, int32) int32](offSleep)(tls, base, micros)
}

func vfsCurrentTime(tls *libc.TLS, _ uintptr, pTime uintptr) int32 {
	return baseMethod[func(*libc.TLS, uintptr, uintptr) int32](offCurrentTime)(tls, base, pTime)
}

func vfsGetLastError(tls *libc.TLS, _ uintptr, n int32, z uintptr) int32 {
	return baseMethod[func(*libc.TLS, uintptr, int32, uintptr) int32](offGetLastError)(tls, base, n, z)
}

func vfsCurrentTimeInt64(tls *libc.TLS, _ uintptr, pNow uintptr) int32 {
	return baseMethod[func(*libc.TLS, uintptr, uintptr) int32](offCurrentTimeInt64)(tls, base, pNow)
}
