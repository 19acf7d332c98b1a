package rpc

import (
	"context"
	"crypto/tls"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// crypto/tls writes every record (at most 16 KiB of payload) with its own
// write on the socket, so a gRPC flush of 256 KiB costs 16 system calls.
// coalesce puts a conn under TLS that, while one Write of the TLS conn is
// in progress, gathers the records it produces and sends them with one
// write at its end (decision 0060). Bytes and their order on the wire are
// unchanged; other writes crypto/tls makes on its own (alerts, key
// updates, close_notify) go out in order because they take the same lock.

// maxCoalesce bounds what one batch holds before it is written out; gRPC
// writes at most its write buffer (256 KiB for bulk transfers) per flush.
const maxCoalesce = 1 << 20

// coalesceCreds wraps transport credentials that return a TLS conn.
type coalesceCreds struct {
	credentials.TransportCredentials
}

func coalesce(c credentials.TransportCredentials) credentials.TransportCredentials {
	return coalesceCreds{c}
}

func (c coalesceCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	raw := &rawConn{Conn: conn}
	tc, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	return &batchConn{Conn: tc, raw: raw}, info, nil
}

func (c coalesceCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	raw := &rawConn{Conn: conn}
	tc, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	return &batchConn{Conn: tc, raw: raw}, info, nil
}

func (c coalesceCreds) Clone() credentials.TransportCredentials {
	return coalesceCreds{c.TransportCredentials.Clone()}
}

// rawConn is the socket under TLS. While batching, writes are appended to
// buf; mu orders them with the flush.
type rawConn struct {
	net.Conn
	mu       sync.Mutex
	batching bool
	buf      []byte
	err      error // a failed batched write, returned by the flush
}

func (c *rawConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batching {
		return c.Conn.Write(p)
	}
	if c.err != nil {
		return 0, c.err
	}
	if len(c.buf)+len(p) > maxCoalesce {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > maxCoalesce {
			return c.Conn.Write(p)
		}
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *rawConn) flushLocked() error {
	if len(c.buf) > 0 {
		_, err := c.Conn.Write(c.buf)
		c.buf = c.buf[:0]
		if err != nil && c.err == nil {
			c.err = err
		}
	}
	return c.err
}

func (c *rawConn) begin() {
	c.mu.Lock()
	c.batching = true
	c.mu.Unlock()
}

// end writes what the batch gathered and stops batching.
func (c *rawConn) end() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = false
	err := c.flushLocked()
	c.err = nil
	if cap(c.buf) > maxCoalesce {
		c.buf = nil
	}
	return err
}

// batchConn is the TLS conn whose Writes are coalesced underneath.
type batchConn struct {
	net.Conn
	raw *rawConn
	wmu sync.Mutex // one batch at a time

	shaken bool // the handshake is complete; guarded by wmu
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.shaken {
		// A handshake started by this Write must reach the peer before
		// its answer is awaited: no batching until it is done.
		tc, ok := c.Conn.(interface{ ConnectionState() tls.ConnectionState })
		if !ok || !tc.ConnectionState().HandshakeComplete {
			return c.Conn.Write(p)
		}
		c.shaken = true
	}
	c.raw.begin()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.end(); ferr != nil && err == nil {
		// Records reported written never reached the socket.
		return 0, ferr
	}
	return n, err
}
