package recall

// OnListingJoined has fn called each time a listing joins a group formed
// by another, so tests can wait for it.
func (c *Client) OnListingJoined(fn func()) { c.lists.joined = fn }
