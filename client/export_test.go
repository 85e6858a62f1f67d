package client

// WatchActionOf names what Watch does after a stream fails with err, for
// the tests.
func WatchActionOf(err error) string {
	return [...]string{actionRetry: "retry", actionResync: "resync", actionRejectCursor: "reject", actionStop: "stop"}[classify(err)]
}
