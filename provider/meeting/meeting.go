// Package meeting finds online-meeting join links in free text and names the
// service behind them, so every provider and platform reports meeting links
// the same way (a bot scheduler joins whatever has a link).
package meeting

import (
	"html"
	"net/url"
	"regexp"
	"strings"
)

// Platform names, as they appear in CalendarEvent.meeting_platform.
const (
	GoogleMeet     = "google_meet"
	Zoom           = "zoom"
	MicrosoftTeams = "microsoft_teams"
	Webex          = "webex"
	GoToMeeting    = "gotomeeting"
	Whereby        = "whereby"
	Chime          = "chime"
	Jitsi          = "jitsi"
	Other          = "other"
)

// maxTextLen bounds the text scanned per argument: descriptions are small,
// and a pathological body must not make normalization slow.
const maxTextLen = 256 << 10

// candidateRE matches anything that may be a URL: an http(s) URL, or a
// scheme-less link on a known meeting host (invitations often write
// "meet.google.com/abc-defg-hij" without a scheme).
var candidateRE = regexp.MustCompile(`(?i)(?:https?://|\b(?:[a-z0-9-]+\.)*(?:meet\.google\.com|zoom\.us|zoomgov\.com|teams\.microsoft\.com|teams\.live\.com|webex\.com|whereby\.com|chime\.aws|gotomeeting\.com|meet\.goto\.com|meet\.jit\.si)/)[^\s"'<>\x60\\]+`)

// meetCodeRE is the shape of a Google Meet meeting code path.
var meetCodeRE = regexp.MustCompile(`^/(?:[a-z]{3}-[a-z]{4}-[a-z]{3}|lookup/[a-z0-9]+)(?:/|$)`)

// Find returns the first join link of a known meeting service found in the
// texts, scanned in order (for example a location, then a description), and
// the platform it belongs to. Texts may be plain or HTML: entities are
// decoded, links inside href="..." are found, trailing punctuation is
// dropped, and Outlook safelinks and Google redirects are unwrapped. Find
// returns empty strings when no text holds a known join link; links to
// unknown services are not meeting links.
func Find(texts ...string) (link, platform string) {
	for _, text := range texts {
		if len(text) > maxTextLen {
			text = text[:maxTextLen]
		}
		if strings.Contains(text, "&") {
			text = html.UnescapeString(text)
		}
		for _, m := range candidateRE.FindAllString(text, -1) {
			u := clean(m)
			if u == "" {
				continue
			}
			if p, join := classify(u); join {
				return u, p
			}
		}
	}
	return "", ""
}

// Platform names the meeting service behind a URL that is known to be a
// meeting link (for example a provider's meeting_url field): one of the
// platform constants, Other for a URL of an unknown service, or "" when
// link is empty or not an http(s) URL. Safelinks are unwrapped first.
func Platform(link string) string {
	link = strings.TrimSpace(link)
	if link == "" {
		return ""
	}
	if !hasScheme(link) {
		link = "https://" + link
	}
	u, err := url.Parse(link)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	if inner := unwrap(u); inner != nil {
		u = inner
	}
	if p := platformOf(u); p != "" {
		return p
	}
	return Other
}

func hasScheme(s string) bool {
	l := strings.ToLower(s)
	return strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://") || strings.Contains(l, "://")
}

// clean turns a regexp match into a URL: it adds a missing scheme, drops
// trailing punctuation and unbalanced closing brackets, unwraps redirect
// links, and returns "" when the result is not a usable URL.
func clean(m string) string {
	m = trimTrailing(m)
	if !hasScheme(m) {
		m = "https://" + m
	}
	u, err := url.Parse(m)
	if err != nil || u.Host == "" {
		return ""
	}
	if inner := unwrap(u); inner != nil {
		return inner.String()
	}
	return m
}

// trimTrailing drops characters that end a sentence rather than a URL.
func trimTrailing(s string) string {
	for s != "" {
		last := s[len(s)-1]
		switch last {
		case '.', ',', ';', ':', '!', '?', '*', '|':
			s = s[:len(s)-1]
			continue
		case ')', ']', '}':
			open := map[byte]byte{')': '(', ']': '[', '}': '{'}[last]
			if strings.Count(s, string(open)) < strings.Count(s, string(last)) {
				s = s[:len(s)-1]
				continue
			}
		}
		return s
	}
	return s
}

// unwrap returns the target of an Outlook safelink or a Google redirect
// link, or nil when u is neither.
func unwrap(u *url.URL) *url.URL {
	host := strings.ToLower(u.Hostname())
	var target string
	switch {
	case strings.HasSuffix(host, ".safelinks.protection.outlook.com"):
		target = u.Query().Get("url")
	case (host == "www.google.com" || host == "google.com") && u.Path == "/url":
		target = u.Query().Get("q")
	default:
		return nil
	}
	if target == "" {
		return nil
	}
	inner, err := url.Parse(target)
	if err != nil || (inner.Scheme != "http" && inner.Scheme != "https") || inner.Host == "" {
		return nil
	}
	return inner
}

// classify parses a cleaned URL and reports its platform and whether it is
// a join link (not just a page on the service's web site).
func classify(link string) (platform string, join bool) {
	u, err := url.Parse(link)
	if err != nil {
		return "", false
	}
	p := platformOf(u)
	if p == "" {
		return "", false
	}
	return p, isJoin(p, u)
}

// hostIs reports whether host is domain or one of its subdomains.
func hostIs(host, domain string) bool {
	return host == domain || strings.HasSuffix(host, "."+domain)
}

// platformOf names the service that owns u's host, or "".
func platformOf(u *url.URL) string {
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	switch {
	case host == "meet.google.com":
		return GoogleMeet
	case hostIs(host, "zoom.us"), hostIs(host, "zoomgov.com"):
		return Zoom
	case hostIs(host, "teams.microsoft.com"), hostIs(host, "teams.live.com"),
		hostIs(host, "teams.microsoft.us"), hostIs(host, "teams.cloud.microsoft"):
		return MicrosoftTeams
	case hostIs(host, "webex.com"):
		return Webex
	case hostIs(host, "gotomeeting.com"), hostIs(host, "gotomeet.me"), host == "meet.goto.com":
		return GoToMeeting
	case hostIs(host, "whereby.com"):
		return Whereby
	case hostIs(host, "chime.aws"):
		return Chime
	case host == "meet.jit.si":
		return Jitsi
	}
	return ""
}

// isJoin reports whether u, on platform p, points at a meeting rather
// than at the service's home, download or help pages.
func isJoin(p string, u *url.URL) bool {
	path := u.EscapedPath()
	lp := strings.ToLower(path)
	switch p {
	case GoogleMeet:
		return meetCodeRE.MatchString(lp)
	case Zoom:
		for _, prefix := range []string{"/j/", "/my/", "/w/", "/s/", "/wc/join/", "/wc/"} {
			if strings.HasPrefix(lp, prefix) && len(lp) > len(prefix) {
				return true
			}
		}
		return false
	case MicrosoftTeams:
		for _, prefix := range []string{"/l/meetup-join/", "/meet/", "/l/meeting/", "/_#/l/meetup-join/"} {
			if strings.HasPrefix(lp, prefix) && len(lp) > len(prefix) {
				return true
			}
		}
		return false
	case Webex:
		host := strings.ToLower(u.Hostname())
		if host == "webex.com" || host == "www.webex.com" || host == "help.webex.com" {
			return false
		}
		return strings.Contains(lp, "/j.php") || strings.Contains(lp, "/meet/") ||
			strings.Contains(lp, "/join") || strings.Contains(lp, "/wbxmjs/")
	case GoToMeeting:
		host := strings.ToLower(u.Hostname())
		switch {
		case hostIs(host, "gotomeet.me"), host == "meet.goto.com":
			return len(strings.Trim(lp, "/")) > 0
		default:
			return strings.HasPrefix(lp, "/join/") || u.Query().Get("meetingId") != ""
		}
	case Whereby, Jitsi:
		seg := strings.Trim(lp, "/")
		return seg != "" && !strings.Contains(seg, "/") &&
			seg != "information" && seg != "user" && seg != "pricing"
	case Chime:
		seg := strings.Trim(lp, "/")
		return seg != "" && (strings.HasPrefix(seg, "meetings/") || isDigits(seg))
	}
	return false
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
