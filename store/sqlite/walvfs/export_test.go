package walvfs

// Counts returns how many writes the VFS held and how many times it wrote
// held writes out.
func Counts() (held, flushed int64) { return heldWrites.Load(), flushes.Load() }

// Syncs returns how many times a log was synced through the VFS.
func Syncs() int64 { return syncs.Load() }

// ViewReads returns how many reads of a log or a database file were served
// by its view.
func ViewReads() int64 { return viewReads.Load() }
