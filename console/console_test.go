package console_test

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/calsync/calsync/console"
)

// TestAssetsRenderTextOnly guards the console's rule that provider data is
// only ever text: no script builds markup from strings or evaluates code,
// and no page carries inline script or style, which the
// Content-Security-Policy would block anyway.
func TestAssetsRenderTextOnly(t *testing.T) {
	forbidden := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setAttribute\(['"]on|setAttribute\(['"]style`)
	inline := regexp.MustCompile(`(?i)<script(?:\s+type="module")?>|\son[a-z]+=|\sstyle=`)
	err := filepath.WalkDir("assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		switch filepath.Ext(path) {
		case ".js":
			if m := forbidden.FindString(string(b)); m != "" {
				t.Errorf("%s uses %s", path, m)
			}
		case ".html":
			if m := inline.FindString(string(b)); m != "" {
				t.Errorf("%s has inline %q", path, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(console.Handler())
	defer srv.Close()
	for path, wantType := range map[string]string{
		"/ui/":                  "text/html",
		"/ui/app.js":            "text/javascript",
		"/ui/pages/overview.js": "text/javascript",
		"/ui/console.css":       "text/css",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), wantType) ||
			resp.Header.Get("Content-Security-Policy") != console.ContentSecurityPolicy ||
			resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s = %d %v", path, resp.StatusCode, resp.Header)
		}
	}
	resp, err := http.Get(srv.URL + "/ui/missing.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET a missing file = %d", resp.StatusCode)
	}
}
