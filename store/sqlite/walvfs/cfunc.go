package walvfs

import (
	"errors"
	"fmt"
	"unsafe"

	sqlite3 "modernc.org/sqlite/lib"
)

// SQLite, transpiled to Go, keeps a function pointer as a uintptr that holds
// a Go func value. These helpers store and call such pointers.

var (
	errNoDefault = errors.New("walvfs: SQLite has no default VFS")
	errNoMemory  = errors.New("walvfs: out of memory")
)

type registerError struct{ rc int32 }

func (e *registerError) Error() string {
	return fmt.Sprintf("walvfs: registering VFS %s: SQLite error %d", Name, e.rc)
}

// ptr turns an address in SQLite's memory into a pointer.
func ptr(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

// setFunc stores f, which must be a top-level func, in a method slot.
func setFunc[F any](slot *uintptr, f F) { *(*F)(unsafe.Pointer(slot)) = f }

// callable turns a method slot's value into a func of type F.
func callable[F any](fp uintptr) F { return *(*F)(unsafe.Pointer(&fp)) }

// baseMethod returns the default VFS's method at offset off.
func baseMethod[F any](off uintptr) F {
	return callable[F](*(*uintptr)(ptr(base + off)))
}

// inner returns the default VFS's file inside the logFile at pFile.
func inner(pFile uintptr) *sqlite3.Tsqlite3_file {
	return (*sqlite3.Tsqlite3_file)(ptr(pFile + headerSize))
}

// innerMethod returns the method at offset off of the inner file's methods.
func innerMethod[F any](pFile uintptr, off uintptr) F {
	return callable[F](*(*uintptr)(ptr(inner(pFile).FpMethods + off)))
}

var (
	v sqlite3.Tsqlite3_vfs
	m sqlite3.Tsqlite3_io_methods
)

// Offsets of the methods in sqlite3_vfs.
const (
	offOpen             = unsafe.Offsetof(v.FxOpen)
	offDelete           = unsafe.Offsetof(v.FxDelete)
	offAccess           = unsafe.Offsetof(v.FxAccess)
	offFullPathname     = unsafe.Offsetof(v.FxFullPathname)
	offRandomness       = unsafe.Offsetof(v.FxRandomness)
	offSleep            = unsafe.Offsetof(v.FxSleep)
	offCurrentTime      = unsafe.Offsetof(v.FxCurrentTime)
	offGetLastError     = unsafe.Offsetof(v.FxGetLastError)
	offCurrentTimeInt64 = unsafe.Offsetof(v.FxCurrentTimeInt64)
)

// Offsets of the methods in sqlite3_io_methods.
const (
	offClose                 = unsafe.Offsetof(m.FxClose)
	offRead                  = unsafe.Offsetof(m.FxRead)
	offWrite                 = unsafe.Offsetof(m.FxWrite)
	offTruncate              = unsafe.Offsetof(m.FxTruncate)
	offSync                  = unsafe.Offsetof(m.FxSync)
	offFileSize              = unsafe.Offsetof(m.FxFileSize)
	offLock                  = unsafe.Offsetof(m.FxLock)
	offUnlock                = unsafe.Offsetof(m.FxUnlock)
	offCheckReservedLock     = unsafe.Offsetof(m.FxCheckReservedLock)
	offFileControl           = unsafe.Offsetof(m.FxFileControl)
	offSectorSize            = unsafe.Offsetof(m.FxSectorSize)
	offDeviceCharacteristics = unsafe.Offsetof(m.FxDeviceCharacteristics)
	offShmMap                = unsafe.Offsetof(m.FxShmMap)
	offShmLock               = unsafe.Offsetof(m.FxShmLock)
	offShmBarrier            = unsafe.Offsetof(m.FxShmBarrier)
	offShmUnmap              = unsafe.Offsetof(m.FxShmUnmap)
	offFetch                 = unsafe.Offsetof(m.FxFetch)
	offUnfetch               = unsafe.Offsetof(m.FxUnfetch)
)
