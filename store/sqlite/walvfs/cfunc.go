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

// Offsets of the methods in sqlite3_vfs.
const (
	offOpen             = unsafe.Offsetof(sqlite3.Tsqlite3_vfs{}.FxOpen)
	offDelete           = unsafe.Offsetof(sqlite3.Tsqlite3_vfs{}.FxDelete)
	offAccess           = unsafe.Offsetof(sqlite3.Tsqlite3_vfs{}.FxAccess)
	offFullPathname     = unsafe.Offsetof(sqlite3.Tsqlite3_vfs{}.FxFullPathname)
	offRandomness       = unsafe.Offsetof(sqlite3.Tsqlite3_vfs{}.FxRandomness)
	offSleep            = unsafe.Offsetof(sqlite3.Tsqlite3_vfs{}.FxSleep)
	offCurrentTime      = unsafe.Offsetof(sqlite3.Tsqlite3_vfs{}.FxCurrentTime)
	offGetLastError     = unsafe.Offsetof(sqlite3.Tsqlite3_vfs{}.FxGetLastError)
	offCurrentTimeInt64 = unsafe.Offsetof(sqlite3.Tsqlite3_vfs{}.FxCurrentTimeInt64)
)

// Offsets of the methods in sqlite3_io_methods.
const (
	offClose                 = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxClose)
	offRead                  = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxRead)
	offWrite                 = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxWrite)
	offTruncate              = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxTruncate)
	offSync                  = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxSync)
	offFileSize              = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxFileSize)
	offLock                  = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxLock)
	offUnlock                = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxUnlock)
	offCheckReservedLock     = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxCheckReservedLock)
	offFileControl           = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxFileControl)
	offSectorSize            = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxSectorSize)
	offDeviceCharacteristics = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxDeviceCharacteristics)
	offShmMap                = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxShmMap)
	offShmLock               = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxShmLock)
	offShmBarrier            = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxShmBarrier)
	offShmUnmap              = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxShmUnmap)
	offFetch                 = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxFetch)
	offUnfetch               = unsafe.Offsetof(sqlite3.Tsqlite3_io_methods{}.FxUnfetch)
)
