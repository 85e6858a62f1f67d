// Package console is calsync's operator console: a few hand-written pages
// (HTML, CSS and JavaScript modules, no build step) embedded in the binary
// and served at [Path] by the HTTP listener. The pages hold no data: they
// read everything through the REST API, with the operator's bearer token,
// so the console can do nothing its user could not do with curl.
package console

import (
	"embed"
	"io/fs"
	"net/http"
)

// Path is where the console is served.
const Path = "/ui/"

//go:embed assets
var assets embed.FS

// ContentSecurityPolicy lets the pages run only the console's own scripts
// and styles and talk only to the server that served them: no inline
// script, no eval, no frame, no form posted elsewhere. Provider data
// (titles, descriptions) is attacker-controlled; even if a page rendered
// it as markup by mistake, nothing in it could run.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the console's files under [Path], GET and HEAD only, with a
// strict Content-Security-Policy. Files are revalidated on every load, so a
// new binary's console is picked up at once.
func Handler() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree always has assets/
	}
	files := http.StripPrefix(Path, http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
