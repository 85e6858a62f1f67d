package walvfs

import (
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// A database file opened through the VFS reads through its view (see
// view.go), which its writes and truncates keep informed; every other
// method goes to the default VFS's file. The log's methods use the view
// through the same functions, after writing out what the log holds. The
// writer needs this more than SQLite's own memory map: SQLite never maps a
// page for a connection that holds a write transaction, and the writer
// always does.

func setDBMethods(m *sqlite3.Tsqlite3_io_methods) {
	setForwarders(m)
	setFunc(&m.FxClose, viewClose)
	setFunc(&m.FxRead, viewRead)
	setFunc(&m.FxWrite, viewWrite)
	setFunc(&m.FxTruncate, viewTruncate)
	setFunc(&m.FxSync, fwdSync)
	setFunc(&m.FxFileSize, fwdFileSize)
	setFunc(&m.FxFileControl, fwdFileControl)
	setFunc(&m.FxFetch, fwdFetch)
}

// viewClose lets go of the file's view and closes the file.
func viewClose(tls *libc.TLS, pFile uintptr) int32 {
	f := (*logFile)(ptr(pFile))
	closeView(f.view)
	f.view = 0
	return innerMethod[func(*libc.TLS, uintptr) int32](pFile, offClose)(tls, pFile+headerSize)
}

// viewRead reads from the file's view if it can, and from the file if not.
func viewRead(tls *libc.TLS, pFile uintptr, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	if v := viewOf((*logFile)(ptr(pFile)).view); v != nil && iAmt > 0 && v.read(unsafe.Slice((*byte)(ptr(zBuf)), iAmt), iOfst) {
		return sqlite3.SQLITE_OK
	}
	return innerMethod[func(*libc.TLS, uintptr, uintptr, int32, int64) int32](pFile, offRead)(tls, pFile+headerSize, zBuf, iAmt, iOfst)
}

// viewWrite writes to the file and tells its view how far the file now
// reaches.
func viewWrite(tls *libc.TLS, pFile uintptr, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	rc := innerMethod[func(*libc.TLS, uintptr, uintptr, int32, int64) int32](pFile, offWrite)(tls, pFile+headerSize, zBuf, iAmt, iOfst)
	if v := viewOf((*logFile)(ptr(pFile)).view); v != nil && rc == sqlite3.SQLITE_OK {
		v.grew(iOfst + int64(iAmt))
	}
	return rc
}

// viewTruncate truncates the file, telling its view first: a read must
// never count on bytes a truncate may remove.
func viewTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	if v := viewOf((*logFile)(ptr(pFile)).view); v != nil {
		v.cut(size)
	}
	return innerMethod[func(*libc.TLS, uintptr, int64) int32](pFile, offTruncate)(tls, pFile+headerSize, size)
}

func fwdSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	return innerMethod[func(*libc.TLS, uintptr, int32) int32](pFile, offSync)(tls, pFile+headerSize, flags)
}

func fwdFileSize(tls *libc.TLS, pFile uintptr, pSize uintptr) int32 {
	return innerMethod[func(*libc.TLS, uintptr, uintptr) int32](pFile, offFileSize)(tls, pFile+headerSize, pSize)
}

func fwdFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	return innerMethod[func(*libc.TLS, uintptr, int32, uintptr) int32](pFile, offFileControl)(tls, pFile+headerSize, op, pArg)
}

func fwdFetch(tls *libc.TLS, pFile uintptr, iOfst int64, iAmt int32, pp uintptr) int32 {
	return innerMethod[func(*libc.TLS, uintptr, int64, int32, uintptr) int32](pFile, offFetch)(tls, pFile+headerSize, iOfst, iAmt, pp)
}
