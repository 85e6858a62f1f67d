// Package client is the Go client of calsync: typed calls for its API, a
// watch that never loses its place, and an informer that keeps a local,
// always current copy of the events a service cares about.
//
// # Connecting
//
// [New] connects to calsync's gRPC address. Options add the API token
// ([WithToken]) and TLS ([WithTLS] for the system's roots, [WithCAFile],
// [WithClientCertificate] for mutual TLS). The connection is tuned for long
// streams: keepalive pings within what calsync tolerates, and the larger
// HTTP/2 windows a watch catching up needs. List calls return iterators that
// follow page tokens:
//
//	for ev, err := range c.ListEvents(ctx, &calsyncv1.ListEventsRequest{CalendarId: "-"}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(ev.GetTitle())
//	}
//
// # Watching changes
//
// [Client.Watch] calls a [Handler] for every change, in order, exactly once
// while it runs, across disconnects and calsync restarts. It reconnects with
// jittered exponential backoff and resumes after the last change the handler
// returned for. With a [FileCursorStore] it resumes across restarts of the
// watching process too, at least once: the cursor is saved after the
// handler returns, so a crash in between delivers that change again (with
// WatchOptions.SaveInterval, the changes handled since the last save), and no
// change is ever skipped. When calsync can no longer replay what was missed
// (the cursor is older than the change log's retention), the handler's
// OnResync receives a fresh snapshot instead; a cursor of another database
// is an error ([ErrCursorRejected]), never a silent restart from now.
//
// # Informers
//
// An [Informer] is a local cache of the events matching a filter
// (calendars, providers, a time window, a predicate), filled by a snapshot
// and kept current by a watch, with OnAdd, OnUpdate and OnDelete handlers.
// After a resynchronization its cache equals calsync's state and the
// handlers see only what changed meanwhile. A service that must act on every
// upcoming meeting needs little more than an informer: see
// examples/bot-scheduler.
package client
