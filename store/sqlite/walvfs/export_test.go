package walvfs

// Counts returns how many writes the VFS held and how many times it wrote
// held writes out.
func Counts() (held, flushed int64) { return heldWrites.Load(), flushes.Load() }
