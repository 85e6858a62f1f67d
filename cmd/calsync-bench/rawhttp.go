package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// rawConn is one load connection's HTTP/1.1 client: a kept-alive TCP
// connection that writes each request in one call and reads the answer
// with http.ReadResponse. The load runs on the machine it measures, and
// net/http's Client spends about 50 µs of CPU per request on pooling,
// per-request goroutines and header maps, a third of what calsync spends
// on the webhook itself; this one spends what writing and reading the
// bytes cost. It sends one request at a time and is not safe for
// concurrent use: each load connection has its own.
type rawConn struct {
	host    string // host:port, also the Host header
	timeout time.Duration
	conn    net.Conn
	br      *bufio.Reader
	buf     []byte
}

func newRawConn(base string, timeout time.Duration) (*rawConn, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("raw HTTP client: %q is not an http:// address", base)
	}
	return &rawConn{host: u.Host, timeout: timeout}, nil
}

// header is one request header line.
type header struct{ name, value string }

// post sends body to path with headers and returns the answer's status.
// The connection is dialed on first use and again after any failure; a
// failed request is not retried (the load's own loop resends it).
func (c *rawConn) post(ctx context.Context, path string, headers []header, body []byte) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if c.conn == nil {
		d := net.Dialer{Timeout: c.timeout}
		conn, err := d.DialContext(ctx, "tcp", c.host)
		if err != nil {
			return 0, err
		}
		c.conn, c.br = conn, bufio.NewReaderSize(conn, 4096)
	}
	b := append(c.buf[:0], "POST "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, c.host...)
	b = append(b, "\r\nUser-Agent: calsync-bench\r\n"...)
	for _, h := range headers {
		b = append(append(append(append(b, h.name...), ": "...), h.value...), "\r\n"...)
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(append(b, "\r\n\r\n"...), body...)
	c.buf = b
	status, err := c.roundTrip(b)
	if err != nil {
		c.close()
		return 0, err
	}
	return status, nil
}

func (c *rawConn) roundTrip(req []byte) (int, error) {
	if err := c.conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	if _, err := c.conn.Write(req); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	if resp.Close {
		c.close()
	}
	return resp.StatusCode, nil
}

func (c *rawConn) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.br = nil, nil
	}
}
