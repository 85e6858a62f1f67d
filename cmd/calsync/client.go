package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/calsync/calsync/client"
	"github.com/calsync/calsync/server"
)

// clientConfig is how every client subcommand reaches a calsync server:
// the address, the API token and TLS. Each flag has an environment
// variable: --server is CALSYNC_SERVER, --token is CALSYNC_TOKEN.
type clientConfig struct {
	server        string
	token         string
	useTLS        bool
	tlsCA         string
	tlsCert       string
	tlsKey        string
	tlsServerName string
	timeout       time.Duration
}

// register adds the connection flags to fs.
func (c *clientConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", "127.0.0.1:9090", "calsync gRPC address (host:port)")
	fs.StringVar(&c.token, "token", "", "API bearer token (prefer the CALSYNC_TOKEN environment variable: flags show up in ps)")
	fs.BoolVar(&c.useTLS, "tls", false, "connect with TLS, verifying the server against the system's roots (implied by --tls-ca and --tls-cert)")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM CA bundle to verify the server's certificate with")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM client certificate, for servers that require mutual TLS")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.tlsServerName, "tls-server-name", "", "name to verify the server's certificate against (default: the host of --server)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long one call may take (watch streams excepted)")
}

// bearerToken sends the API token with every call.
type bearerToken struct {
	token  string
	secure bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false so a token can reach a server on
// loopback without TLS; dial refuses plain text to any other host.
func (b bearerToken) RequireTransportSecurity() bool { return b.secure }

// dial connects to the server. It refuses to send a token in plain text to
// a host other than this machine.
func (c *clientConfig) dial() (*grpc.ClientConn, error) {
	if c.server == "" {
		return nil, usageError{errors.New("--server is empty")}
	}
	opts := []grpc.DialOption{
		// Ping a quiet connection so a dead server or a load balancer that
		// dropped it is noticed; the server allows pings every 10s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
	secure := c.useTLS || c.tlsCA != "" || c.tlsCert != "" || c.tlsKey != ""
	if secure {
		tc, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	} else {
		if c.token != "" && !server.LoopbackOnly(c.server) {
			return nil, usageError{fmt.Errorf("refusing to send the API token in plain text to %s: use --tls or --tls-ca", c.server)}
		}
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if c.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken{token: c.token, secure: secure}))
	}
	conn, err := grpc.NewClient(c.server, opts...)
	if err != nil {
		return nil, usageError{fmt.Errorf("--server %s: %w", c.server, err)}
	}
	return conn, nil
}

// newClient returns a calsync client configured by the flags, with the
// same refusals as dial.
func (c *clientConfig) newClient(ctx context.Context) (*client.Client, error) {
	if c.server == "" {
		return nil, usageError{errors.New("--server is empty")}
	}
	var opts []client.Option
	if c.useTLS || c.tlsCA != "" || c.tlsCert != "" || c.tlsKey != "" {
		// tlsConfig checks the files and says which flag is wrong.
		tc, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithTLSConfig(tc))
	} else if c.token != "" && !server.LoopbackOnly(c.server) {
		return nil, usageError{fmt.Errorf("refusing to send the API token in plain text to %s: use --tls or --tls-ca", c.server)}
	}
	if c.token != "" {
		opts = append(opts, client.WithToken(c.token))
	}
	cl, err := client.New(ctx, c.server, opts...)
	if err != nil {
		return nil, usageError{fmt.Errorf("--server %s: %w", c.server, err)}
	}
	return cl, nil
}

func (c *clientConfig) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.tlsServerName}
	if c.tlsCA != "" {
		pem, err := os.ReadFile(c.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, usageError{fmt.Errorf("--tls-ca: %s holds no PEM certificate", c.tlsCA)}
		}
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, usageError{errors.New("--tls-cert and --tls-key go together")}
	}
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// callContext bounds one unary call by --timeout.
func (c *clientConfig) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.timeout)
}

// rpcError turns a failed call into the one-line error the CLI prints:
// the gRPC code, as the API documents it, then the server's message.
func rpcError(err error) error {
	// The status itself, not status.FromError's, which takes the message
	// of whatever wraps it.
	var withStatus interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &withStatus) {
		return err
	}
	st := withStatus.GRPCStatus()
	msg := strings.Join(strings.Fields(st.Message()), " ")
	if st.Code() == codes.Unavailable && msg == "" {
		msg = "server unreachable"
	}
	return fmt.Errorf("%s: %s", codeName(st.Code()), msg)
}

// codeName spells a code as the API documents it: NOT_FOUND, not NotFound.
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// protoJSON is how --json prints API messages: one compact object per line,
// with the .proto field names the REST API uses.
var protoJSON = protojson.MarshalOptions{UseProtoNames: true}

// printJSONLine writes m as one line of JSON.
func printJSONLine(w io.Writer, m proto.Message) error {
	b, err := protoJSON.Marshal(m)
	if err != nil {
		return err
	}
	// protojson output is not byte-stable by design; compact it so every
	// object is exactly one line.
	var out strings.Builder
	if err := compactJSON(&out, b); err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, out.String())
	return err
}

func compactJSON(w *strings.Builder, b []byte) error {
	var v json.RawMessage = b
	c, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Write(c)
	return nil
}
