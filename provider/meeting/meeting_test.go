package meeting

import (
	"strings"
	"testing"
)

func TestFind(t *testing.T) {
	tests := []struct {
		name         string
		texts        []string
		wantURL      string
		wantPlatform string
	}{
		{"Empty", nil, "", ""},
		{"NoLink", []string{"Room 4B", "Bring slides."}, "", ""},
		{"GoogleMeet", []string{"Join: https://meet.google.com/abc-defg-hij."}, "https://meet.google.com/abc-defg-hij", GoogleMeet},
		{"GoogleMeetNoScheme", []string{"meet.google.com/abc-defg-hij"}, "https://meet.google.com/abc-defg-hij", GoogleMeet},
		{"GoogleMeetHomeIsNotJoin", []string{"https://meet.google.com/ and https://zoom.us/j/1"}, "https://zoom.us/j/1", Zoom},
		{"ZoomWithPassword", []string{"Zoom: https://us02web.zoom.us/j/85551234567?pwd=aBcD1234, see you"}, "https://us02web.zoom.us/j/85551234567?pwd=aBcD1234", Zoom},
		{"ZoomPersonal", []string{"https://acme.zoom.us/my/jane.doe"}, "https://acme.zoom.us/my/jane.doe", Zoom},
		{"ZoomGov", []string{"(https://acme.zoomgov.com/j/1612345678)"}, "https://acme.zoomgov.com/j/1612345678", Zoom},
		{"ZoomDownloadIsNotJoin", []string{"Get the app at https://zoom.us/download"}, "", ""},
		{"TeamsHTML", []string{`<a href="https://teams.microsoft.com/l/meetup-join/19%3ameeting_NjU%40thread.v2/0?context=%7b%22Tid%22%3a%22x%22%7d&amp;a=b">Join</a>`},
			"https://teams.microsoft.com/l/meetup-join/19%3ameeting_NjU%40thread.v2/0?context=%7b%22Tid%22%3a%22x%22%7d&a=b", MicrosoftTeams},
		{"TeamsLive", []string{"https://teams.live.com/meet/9312345678901"}, "https://teams.live.com/meet/9312345678901", MicrosoftTeams},
		{"TeamsSafelink", []string{"https://nam11.safelinks.protection.outlook.com/?url=https%3A%2F%2Fteams.microsoft.com%2Fl%2Fmeetup-join%2Fabc&data=05%7C01"},
			"https://teams.microsoft.com/l/meetup-join/abc", MicrosoftTeams},
		{"GoogleRedirect", []string{"https://www.google.com/url?q=https://zoom.us/j/123&sa=D"}, "https://zoom.us/j/123", Zoom},
		{"Webex", []string{"Webex: https://acme.webex.com/acme/j.php?MTID=m123abc!"}, "https://acme.webex.com/acme/j.php?MTID=m123abc", Webex},
		{"WebexMeet", []string{"https://acme.webex.com/meet/jane"}, "https://acme.webex.com/meet/jane", Webex},
		{"GoTo", []string{"https://global.gotomeeting.com/join/123456789"}, "https://global.gotomeeting.com/join/123456789", GoToMeeting},
		{"GoToMeet", []string{"https://meet.goto.com/123456789"}, "https://meet.goto.com/123456789", GoToMeeting},
		{"Whereby", []string{"https://whereby.com/acme-standup"}, "https://whereby.com/acme-standup", Whereby},
		{"Chime", []string{"https://chime.aws/1234567890"}, "https://chime.aws/1234567890", Chime},
		{"Jitsi", []string{"https://meet.jit.si/AcmeWeekly"}, "https://meet.jit.si/AcmeWeekly", Jitsi},
		{"FirstTextWins", []string{"https://zoom.us/j/1", "https://meet.google.com/abc-defg-hij"}, "https://zoom.us/j/1", Zoom},
		{"LaterTextWhenFirstHasNone", []string{"Room 1", "https://meet.google.com/abc-defg-hij"}, "https://meet.google.com/abc-defg-hij", GoogleMeet},
		{"SkipsUnknownLinks", []string{"Agenda https://docs.example.com/x then https://zoom.us/j/99"}, "https://zoom.us/j/99", Zoom},
		{"BalancedParens", []string{"https://acme.webex.com/meet/a(b)"}, "https://acme.webex.com/meet/a(b)", Webex},
		{"AngleBrackets", []string{"<https://zoom.us/j/42>"}, "https://zoom.us/j/42", Zoom},
		{"EscapedAngleBrackets", []string{"&lt;https://zoom.us/j/42&gt;"}, "https://zoom.us/j/42", Zoom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, p := Find(tt.texts...)
			if u != tt.wantURL || p != tt.wantPlatform {
				t.Errorf("Find(%q) = %q, %q; want %q, %q", tt.texts, u, p, tt.wantURL, tt.wantPlatform)
			}
		})
	}
}

func TestPlatform(t *testing.T) {
	tests := []struct{ url, want string }{
		{"", ""},
		{"not a url at all", ""},
		{"ftp://zoom.us/j/1", ""},
		{"https://meet.google.com/abc-defg-hij", GoogleMeet},
		{"meet.google.com/abc-defg-hij", GoogleMeet},
		{"https://zoom.us/j/1", Zoom},
		{"https://us06web.ZOOM.us/j/1", Zoom},
		{"https://acme.zoomgov.com/j/1", Zoom},
		{"https://teams.microsoft.com/l/meetup-join/x", MicrosoftTeams},
		{"https://teams.live.com/meet/1", MicrosoftTeams},
		{"https://acme.webex.com/meet/x", Webex},
		{"https://global.gotomeeting.com/join/1", GoToMeeting},
		{"https://whereby.com/room", Whereby},
		{"https://app.chime.aws/meetings/1", Chime},
		{"https://nam11.safelinks.protection.outlook.com/?url=https%3A%2F%2Fzoom.us%2Fj%2F1", Zoom},
		{"https://meet.example.com/room", Other},
		{"https://notzoom.us/j/1", Other},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			if got := Platform(tt.url); got != tt.want {
				t.Errorf("Platform(%q) = %q, want %q", tt.url, got, tt.want)
			}
		})
	}
}

func FuzzFind(f *testing.F) {
	for _, s := range []string{
		"https://meet.google.com/abc-defg-hij",
		`<a href="https://zoom.us/j/1?pwd=x&amp;y=z">join</a>`,
		"https://nam11.safelinks.protection.outlook.com/?url=https%3A%2F%2Fteams.microsoft.com%2Fl%2Fmeetup-join%2Fabc",
		"(https://acme.webex.com/meet/a(b)).",
		"meet.google.com/abc-defg-hij zoom.us/j/",
		"&#x68;ttps://zoom.us/j/1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, p := Find(s)
		if (u == "") != (p == "") {
			t.Fatalf("Find(%q) = %q, %q: url and platform must be both set or both empty", s, u, p)
		}
		if u == "" {
			return
		}
		if p == Other {
			t.Fatalf("Find(%q) returned an unknown service %q", s, u)
		}
		if got := Platform(u); got != p {
			t.Fatalf("Platform(Find(%q)=%q) = %q, want %q", s, u, got, p)
		}
		if strings.ContainsAny(u, " \t\n\"<>") {
			t.Fatalf("Find(%q) = %q contains a delimiter", s, u)
		}
	})
}
