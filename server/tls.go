package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// TLSFiles names the PEM files of the server's TLS certificate and, for
// mutual TLS, of the CA that signs client certificates. Empty CertFile and
// KeyFile mean plain text.
type TLSFiles struct {
	CertFile, KeyFile string
	// ClientCAFile, if set, makes API calls require a client certificate
	// signed by this CA. Webhooks, health and the OpenAPI document stay
	// reachable without one: providers cannot present client certificates.
	ClientCAFile string
}

func (f TLSFiles) enabled() bool { return f.CertFile != "" || f.KeyFile != "" }

// certificate holds the server certificate; [Server.ReloadTLS] replaces it
// without a restart, for certificates that rotate.
type certificate struct {
	files TLSFiles
	cert  atomic.Pointer[tls.Certificate]
}

func (c *certificate) load() error {
	cert, err := tls.LoadX509KeyPair(c.files.CertFile, c.files.KeyFile)
	if err != nil {
		// The error names the files, never their content.
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	c.cert.Store(&cert)
	return nil
}

// serverTLS builds the TLS configuration both listeners share.
func serverTLS(files TLSFiles) (*tls.Config, *certificate, error) {
	if !files.enabled() {
		if files.ClientCAFile != "" {
			return nil, nil, errors.New("mutual TLS needs the server's own certificate and key too")
		}
		return nil, nil, nil
	}
	if files.CertFile == "" || files.KeyFile == "" {
		return nil, nil, errors.New("TLS needs both a certificate and a key file")
	}
	holder := &certificate{files: files}
	if err := holder.load(); err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return holder.cert.Load(), nil
		},
	}
	if files.ClientCAFile != "" {
		pem, err := os.ReadFile(files.ClientCAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("client CA file %s holds no PEM certificate", files.ClientCAFile)
		}
		cfg.ClientCAs = pool
		// Verified when given, required per route: providers posting
		// webhooks and load balancers checking health have no client
		// certificate, while every API call must have one.
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, holder, nil
}

// inprocNetwork is the network name of the in-process listener the REST
// gateway dials (bufconn's).
const inprocNetwork = "bufconn"
