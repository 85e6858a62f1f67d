package ingest

import "encoding/json"

// eventName reads the event name of a body the provider parser rejected, so
// operators can see what kind of delivery was dead-lettered or ignored.
// Recall uses "event" (Svix pings use "event_type"); postpress uses "event".
func eventName(body []byte) string {
	var v struct {
		Event     any `json:"event"`
		EventType any `json:"event_type"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	for _, e := range []any{v.Event, v.EventType} {
		if s, ok := e.(string); ok && len(s) <= 100 {
			return s
		}
	}
	return ""
}
