package server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/calsync/calsync/metrics"
)

// Tokens is the set of API bearer tokens the server accepts. It is replaced
// as a whole by [Tokens.Set] (a SIGHUP reload of --api-tokens-file) while
// the server runs; calls are authenticated when they start, so a reload
// never ends a watch stream that is already open.
//
// Only SHA-256 digests are kept: comparing digests of equal length in
// constant time leaks neither a token nor its length, and a heap dump holds
// no usable token.
type Tokens struct {
	digests atomic.Pointer[[][sha256.Size]byte]
}

// NewTokens returns a set holding tokens.
func NewTokens(tokens []string) *Tokens {
	t := &Tokens{}
	t.Set(tokens)
	return t
}

// Set replaces the accepted tokens. Empty tokens are ignored; an empty set
// accepts no token at all (it never turns authentication off).
func (t *Tokens) Set(tokens []string) {
	ds := make([][sha256.Size]byte, 0, len(tokens))
	for _, tok := range tokens {
		if tok != "" {
			ds = append(ds, sha256.Sum256([]byte(tok)))
		}
	}
	t.digests.Store(&ds)
}

// Len is how many tokens are accepted.
func (t *Tokens) Len() int { return len(*t.digests.Load()) }

// Valid reports whether token is one of the set. It compares against every
// token, whatever matches, so its timing says nothing about which did.
func (t *Tokens) Valid(token string) bool {
	d := sha256.Sum256([]byte(token))
	ok := 0
	for _, want := range *t.digests.Load() {
		ok |= subtle.ConstantTimeCompare(d[:], want[:])
	}
	return ok == 1 && token != ""
}

// ReadTokenFile reads an API token file: one token per line; blank lines
// and lines starting with # are skipped. Errors never quote the file's
// content, which is secret.
func ReadTokenFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read API token file: %w", err)
	}
	defer f.Close()
	var tokens []string
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		tok := strings.TrimSpace(sc.Text())
		if tok == "" || strings.HasPrefix(tok, "#") {
			continue
		}
		if strings.ContainsAny(tok, " \t,") {
			return nil, fmt.Errorf("read API token file %s: line %d holds more than one token (one per line)", path, line)
		}
		tokens = append(tokens, tok)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read API token file %s: %w", path, err)
	}
	return tokens, nil
}

// Reasons a request is refused, the values of the reason label of
// calsync_api_auth_failures_total.
const (
	authMissingToken = "missing_token"
	authInvalidToken = "invalid_token"
	authNoClientCert = "no_client_certificate"
)

// publicMethods are the gRPC methods that need no API credentials:
// webhooks carry their provider's credentials, health checks come from
// load balancers and orchestrators that hold no token, and reflection
// describes only the API's schema, which is public (GET /openapi.json
// serves the same), so grpcurl works before a token is at hand.
var publicMethods = map[string]bool{
	calsyncWebhookIngest: true,
}

var publicServices = map[string]bool{
	"grpc.health.v1.Health":                    true,
	"grpc.reflection.v1.ServerReflection":      true,
	"grpc.reflection.v1alpha.ServerReflection": true,
}

const calsyncWebhookIngest = "/calsync.v1.WebhookService/IngestWebhook"

// authenticator decides whether an API call may go ahead: with a bearer
// token from tokens (when set) and, with mutual TLS, over a connection
// whose client certificate the configured CA signed.
type authenticator struct {
	tokens      *Tokens
	requireCert bool
	metrics     *metrics.Metrics
}

// enabled reports whether the API asks for any credential at all.
func (a *authenticator) enabled() bool { return a.tokens != nil || a.requireCert }

// needsAuth selects the calls the interceptors check.
func needsAuth(_ context.Context, cm interceptors.CallMeta) bool {
	return !publicMethods[cm.FullMethod()] && !publicServices[cm.Service]
}

func (a *authenticator) unary() grpc.UnaryServerInterceptor {
	return selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(a.authenticate), selector.MatchFunc(needsAuth))
}

func (a *authenticator) stream() grpc.StreamServerInterceptor {
	return selector.StreamServerInterceptor(auth.StreamServerInterceptor(a.authenticate), selector.MatchFunc(needsAuth))
}

// authenticate is the interceptors' check. Calls from the in-process REST
// gateway have had their client certificate checked by the HTTP server
// already; their bearer token is the REST client's, forwarded.
func (a *authenticator) authenticate(ctx context.Context) (context.Context, error) {
	if a.requireCert && !fromGateway(ctx) && !verifiedClient(ctx) {
		a.metrics.AuthFailure(authNoClientCert)
		return nil, status.Error(codes.Unauthenticated, "a client certificate signed by the server's client CA is required")
	}
	if a.tokens == nil {
		return ctx, nil
	}
	var header string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if vs := md.Get("authorization"); len(vs) > 0 {
			header = vs[0]
		}
	}
	if err := a.checkToken(header); err != nil {
		return nil, err
	}
	return ctx, nil
}

var (
	errMissingToken = status.Error(codes.Unauthenticated, `missing API token: send the header "authorization: Bearer <token>"`)
	errInvalidToken = status.Error(codes.Unauthenticated, "invalid API token")
)

// checkToken checks an Authorization header value.
func (a *authenticator) checkToken(header string) error {
	scheme, token, found := strings.Cut(strings.TrimSpace(header), " ")
	if header == "" {
		a.metrics.AuthFailure(authMissingToken)
		return errMissingToken
	}
	if !found || !strings.EqualFold(scheme, "bearer") || !a.tokens.Valid(strings.TrimSpace(token)) {
		a.metrics.AuthFailure(authInvalidToken)
		return errInvalidToken
	}
	return nil
}

// fromGateway reports whether the call came over the in-process
// connection of the REST gateway.
func fromGateway(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	return ok && p.Addr != nil && p.Addr.Network() == inprocNetwork
}

// verifiedClient reports whether the call's connection presented a client
// certificate that verified against the client CA.
func verifiedClient(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	return ok && len(info.State.VerifiedChains) > 0
}

// httpPublic reports whether an HTTP path needs no API credentials: health,
// the OpenAPI document, and webhooks (authenticated by their provider).
func httpPublic(r *http.Request) bool {
	return r.URL.Path == "/healthz" || r.URL.Path == openAPIPath ||
		(r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, webhookPrefix))
}

// requireHTTPAuth guards the HTTP listener. With mutual TLS, every
// non-public path needs a verified client certificate (the gateway's gRPC
// calls cannot see the HTTP client's certificate, so it is checked here);
// checkTokens also checks the bearer token here, for handlers that are
// not gRPC calls (/metrics). Gateway routes get their token checked by the
// gRPC interceptors, so every API call is checked in one place.
func (a *authenticator) requireHTTPAuth(checkTokens bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !httpPublic(r) {
			if a.requireCert && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
				a.metrics.AuthFailure(authNoClientCert)
				writeUnauthenticated(w, status.Convert(status.Error(codes.Unauthenticated, "a client certificate signed by the server's client CA is required")).Message())
				return
			}
			if checkTokens && a.tokens != nil {
				if err := a.checkToken(r.Header.Get("Authorization")); err != nil {
					writeUnauthenticated(w, status.Convert(err).Message())
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

func writeUnauthenticated(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("WWW-Authenticate", `Bearer realm="calsync"`)
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprintf(w, `{"code":%d,"message":%q,"details":[]}`+"\n", codes.Unauthenticated, msg)
}

// ErrNoAuthentication is returned by [New] when the API would be reachable
// from other machines with no authentication at all.
var ErrNoAuthentication = errors.New("refusing to serve the API without authentication")

// checkExposure is the secure default: with neither API tokens nor mutual
// TLS, the API may only listen on loopback addresses, unless the operator
// says otherwise (Config.InsecureNoAuth). calsync holds people's
// calendars; an open port must never serve them by accident.
func checkExposure(cfg Config, authenticated bool) error {
	if authenticated || cfg.InsecureNoAuth {
		return nil
	}
	addrs := []string{cfg.GRPCAddr, cfg.HTTPAddr}
	if cfg.PprofAddr != "" {
		// The profiles are as private as the API: more so, they show
		// where the process spends its time and memory.
		addrs = append(addrs, cfg.PprofAddr)
	}
	for _, addr := range addrs {
		if !LoopbackOnly(addr) {
			return fmt.Errorf("%w on %s, which is not a loopback address: set --api-tokens or --api-tokens-file (or --tls-client-ca), or pass --insecure-no-auth", ErrNoAuthentication, addr)
		}
	}
	return nil
}

// LoopbackOnly reports whether an address (host:port) is this machine only:
// listeners and clients both use it. An empty host listens everywhere; a host name other
// than localhost is not trusted to stay loopback.
func LoopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
