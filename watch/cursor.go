package watch

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"

	"github.com/calsync/calsync/store"
)

// cursorVersion is the first byte of every encoded cursor, so the format can
// change later without old cursors being misread.
const cursorVersion = 1

// Lengths of the parts of an encoded cursor: version, store tag, sequence
// and checksum.
const (
	storeTagLen  = 8
	cursorRawLen = 1 + storeTagLen + 8 + 4
	// cursorTextLen is the length of an encoded cursor: unpadded base64.
	cursorTextLen = (cursorRawLen*8 + 5) / 6
)

// castagnoli is the CRC-32C table; the checksum makes a mistyped cursor
// INVALID_ARGUMENT instead of a silent jump to another position.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CursorCodec turns change log positions into the opaque cursors clients see
// and back. A cursor names the store it came from, so a cursor from another
// calsync database (or a restored copy with another id) is refused instead of
// silently skipping or repeating changes.
type CursorCodec struct {
	tag [storeTagLen]byte
}

// NewCursorCodec returns the codec of the store with the given
// [store.Store.ID].
func NewCursorCodec(storeID string) CursorCodec {
	sum := sha256.Sum256([]byte("calsync cursor\x00" + storeID))
	var c CursorCodec
	copy(c.tag[:], sum[:])
	return c
}

// Encode returns the opaque cursor of position pos.
func (c CursorCodec) Encode(pos store.Cursor) string {
	var b [cursorTextLen]byte
	return string(c.AppendEncode(b[:0], pos))
}

// AppendEncode appends the opaque cursor of position pos to b, for frames
// built without a string per cursor.
func (c CursorCodec) AppendEncode(b []byte, pos store.Cursor) []byte {
	var raw [cursorRawLen]byte
	raw[0] = cursorVersion
	copy(raw[1:], c.tag[:])
	binary.BigEndian.PutUint64(raw[1+storeTagLen:], uint64(pos))
	binary.BigEndian.PutUint32(raw[cursorRawLen-4:], crc32.Checksum(raw[:cursorRawLen-4], castagnoli))
	return base64.RawURLEncoding.AppendEncode(b, raw[:])
}

// Decode returns the position an opaque cursor names. It fails with an
// INVALID_ARGUMENT [*Error] whose reason is [ReasonCursorMalformed] for
// anything [CursorCodec.Encode] did not produce, and [ReasonCursorForeign]
// for a cursor of another store.
func (c CursorCodec) Decode(s string) (store.Cursor, error) {
	var raw [cursorRawLen]byte
	if base64.RawURLEncoding.DecodedLen(len(s)) != cursorRawLen {
		return 0, errMalformedCursor()
	}
	if n, err := base64.RawURLEncoding.Decode(raw[:], []byte(s)); err != nil || n != cursorRawLen {
		return 0, errMalformedCursor()
	}
	if raw[0] != cursorVersion ||
		binary.BigEndian.Uint32(raw[cursorRawLen-4:]) != crc32.Checksum(raw[:cursorRawLen-4], castagnoli) {
		return 0, errMalformedCursor()
	}
	if [storeTagLen]byte(raw[1:1+storeTagLen]) != c.tag {
		return 0, errForeignCursor()
	}
	return store.Cursor(binary.BigEndian.Uint64(raw[1+storeTagLen:])), nil
}
