package rpc

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countConn counts the writes that reach the socket.
type countConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func selfSigned(t *testing.T) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"x"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// One Write of 256 KiB through TLS reaches the socket as one write, not
// one per 16 KiB record, and the peer reads the same bytes in order.
func TestCoalescedTLSWrites(t *testing.T) {
	a, b := net.Pipe()
	counted := &countConn{Conn: a}
	raw := &rawConn{Conn: counted}
	cert := selfSigned(t)
	srv := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{cert}})
	cli := tls.Client(b, &tls.Config{InsecureSkipVerify: true})
	conn := &batchConn{Conn: srv, raw: raw}
	msg := make([]byte, 256<<10)
	rand.Read(msg)
	var got bytes.Buffer
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := io.CopyN(&got, cli, int64(4*len(msg))); err != nil {
			t.Error(err)
		}
	})
	// The first Write handshakes, unbatched, or it would wait forever.
	if n, err := conn.Write(msg); err != nil || n != len(msg) {
		t.Fatalf("first Write = %d, %v", n, err)
	}
	before := counted.writes.Load()
	for range 3 {
		if n, err := conn.Write(msg); err != nil || n != len(msg) {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	wg.Wait()
	if w := counted.writes.Load() - before; w != 3 {
		t.Errorf("3 Writes of 256 KiB made %d socket writes, want 3", w)
	}
	if !bytes.Equal(got.Bytes(), bytes.Repeat(msg, 4)) {
		t.Error("the peer read other bytes")
	}
	// close_notify after the batches still goes out.
	done := make(chan error, 1)
	go func() { _, err := cli.Read(make([]byte, 1)); done <- err }()
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != io.EOF {
		t.Errorf("peer read after close_notify: %v, want EOF", err)
	}
}

// A socket that fails makes the Write fail, not report success.
func TestCoalescedWriteError(t *testing.T) {
	a, b := net.Pipe()
	raw := &rawConn{Conn: a}
	srv := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}})
	cli := tls.Client(b, &tls.Config{InsecureSkipVerify: true})
	go cli.Handshake()
	if err := srv.Handshake(); err != nil {
		t.Fatal(err)
	}
	conn := &batchConn{Conn: srv, raw: raw}
	b.Close()
	if _, err := conn.Write(make([]byte, 64<<10)); err == nil {
		t.Fatal("Write to a closed peer succeeded")
	}
}
