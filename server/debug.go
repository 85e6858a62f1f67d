package server

import (
	"net/http"
	"net/http/pprof"
)

// pprofPrefix is where the runtime profiles are served on Config.PprofAddr.
const pprofPrefix = "/debug/pprof/"

// pprofHandler serves net/http/pprof's profiles, except the command line:
// flags carry webhook secrets, the Recall API key and API tokens, so
// /debug/pprof/cmdline is answered 404 like any unknown profile. The
// caller puts it behind the API's authentication.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(pprofPrefix, pprof.Index)
	mux.HandleFunc(pprofPrefix+"cmdline", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "the command line is not served: it holds secrets", http.StatusNotFound)
	})
	mux.HandleFunc(pprofPrefix+"profile", pprof.Profile)
	mux.HandleFunc(pprofPrefix+"symbol", pprof.Symbol)
	mux.HandleFunc(pprofPrefix+"trace", pprof.Trace)
	return mux
}
