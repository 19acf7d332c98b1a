package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
)

// writeCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "web.pem"), filepath.Join(dir, "web_key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestRunServesTheLogOverHTTPS runs the catalog with --https-listen: the
// endpoints file names the HTTPS address, which serves the co-signed
// checkpoint and the tiles of what was appended.
func TestRunServesTheLogOverHTTPS(t *testing.T) {
	s := newSetup(t)
	certFile, keyFile, pool := writeCert(t, s.dir)
	args := append(s.args, "--https-listen", "127.0.0.1:0", "--tls-cert-file", certFile, "--tls-key-file", keyFile)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, func(string) string { return "" }, &stderr) }()
	addr := s.waitEndpoints(t, func() error {
		select {
		case err := <-done:
			return fmt.Errorf("run returned %v", err)
		default:
			return nil
		}
	}, stderr.String)
	var eps map[string]string
	b, err := os.ReadFile(s.endpoints)
	if err != nil || json.Unmarshal(b, &eps) != nil || eps["https"] == "" {
		t.Fatalf("endpoints file %s has no https address (%v)", b, err)
	}

	conn, err := rpc.Dial(addr, s.td.ID("/service/catalog"), s.td.Source(t, "/service/gatekeeper"), telemetry.Discard("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ev, err := catalogv1.NewCatalogServiceClient(conn).AppendEvent(ctx, &catalogv1.AppendEventRequest{Type: tlog.TypeAdmissionDecided})
	if err != nil {
		t.Fatal(err)
	}

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	get := func(path string) []byte {
		t.Helper()
		resp, err := hc.Get("https://" + eps["https"] + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, body)
		}
		return body
	}
	cp, err := tlog.OpenCosigned(get("/checkpoint"), "custody.test/log", s.cosigner.VerifierKey())
	if err != nil || cp.Size < 1 {
		t.Fatalf("served checkpoint = %+v, %v; want one co-signed, covering the event", cp, err)
	}
	bundle := get("/tile/entries/000.p/1")
	if !strings.Contains(string(bundle), string(ev.GetEntry().GetLeaf())) {
		t.Errorf("entry bundle does not hold the appended entry")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
}

func TestHTTPSFlagsGoTogether(t *testing.T) {
	s := newSetup(t)
	for _, extra := range [][]string{
		{"--https-listen", "127.0.0.1:0"},
		{"--tls-cert-file", "x.pem", "--tls-key-file", "y.pem"},
	} {
		err := run(t.Context(), append(append([]string{}, s.args...), extra...), func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--https-listen") {
			t.Errorf("run %v = %v, want an error about --https-listen", extra, err)
		}
	}
}
