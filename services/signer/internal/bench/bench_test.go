// Package bench measures signing throughput through the signer over mTLS
// gRPC for each key back end, next to the back end's raw rate measured in
// the same run. `make bench` runs it; each benchmark reports sigs/s,
// raw-sigs/s and their ratio.
package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/keys/pkcs11"
	"github.com/custody-dev/custody/services/signer/internal/keys/pkcs11/softhsmtest"
	"github.com/custody-dev/custody/services/signer/internal/keys/soft"
	"github.com/custody-dev/custody/services/signer/internal/keys/vault"
	"github.com/custody-dev/custody/services/signer/internal/keys/vault/vaulttest"
	"github.com/custody-dev/custody/services/signer/internal/lifecycle"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

// rawDuration is how long each raw rate is measured.
const rawDuration = 2 * time.Second

// clients is how many concurrent requests the signer gets.
const clients = 64

// rate runs fn from n goroutines for d and returns calls per second.
func rate(b *testing.B, n int, d time.Duration, fn func() error) float64 {
	b.Helper()
	var count atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := fn(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	return float64(count.Load()) / time.Since(start).Seconds()
}

// batch is how many statements a coalescing publisher puts in one
// SignArtifacts call in the batched measurement, and batchClients how many
// such calls are outstanding.
const (
	batch        = 64
	batchClients = 2
	batchTime    = 3 * time.Second
)

// throughSigner serves the signer API over mTLS on loopback with backend
// and measures SignArtifact calls per second from clients goroutines, then
// signatures per second through SignArtifacts from batchClients goroutines
// sending batch statements each.
func throughSigner(b *testing.B, backend keys.Backend) (unary, batched float64) {
	b.Helper()
	td := identitytest.New(b, "custody.bench")
	names := server.Keys{Artifact: "bench-artifact", Decision: "bench-decision"}
	if err := server.EnsureKeys(b.Context(), backend, names); err != nil {
		b.Fatal(err)
	}
	srv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(b, "/service/signer"), TrustDomain: td.TD,
		Policy: server.Policy(td.TD), Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard("signer")})
	signing := keys.NewCoalescer(backend, vault.MaxInFlight, vault.MaxBatch)
	lc, err := lifecycle.Open(lifecycle.Config{Backend: signing, ArtifactKey: names.Artifact, DecisionKey: names.Decision, Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	signerv1.RegisterSignerServiceServer(srv, server.New(signing, lc, slog.New(slog.DiscardHandler)))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(srv.Stop)
	// A few connections, as a fleet of publishers would open.
	var cs []signerv1.SignerServiceClient
	for range 4 {
		conn, err := rpc.Dial(l.Addr().String(), td.ID("/service/signer"), td.Source(b, "/service/publisher"), telemetry.Discard("bench"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		cs = append(cs, signerv1.NewSignerServiceClient(conn))
	}
	statement, err := attest.NewProvenance(attest.Artifact{Name: "bench", Version: "1", Channel: "dev",
		Digest: "sha256:" + fmt.Sprintf("%064x", 1), BuilderID: td.ID("/builder/ci").String()})
	if err != nil {
		b.Fatal(err)
	}
	req := &signerv1.SignArtifactRequest{Channel: "dev", Statement: statement}
	var next atomic.Int64
	b.SetParallelism(max(1, clients/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		c := cs[int(next.Add(1))%len(cs)]
		for pb.Next() {
			if _, err := c.SignArtifact(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	got := float64(b.N) / time.Since(start).Seconds()
	b.StopTimer()
	items := make([]*signerv1.SignArtifactRequest, batch)
	for i := range items {
		items[i] = req
	}
	breq := &signerv1.SignArtifactsRequest{Items: items}
	var bnext atomic.Int64
	batched = batch * rate(b, batchClients, batchTime, func() error {
		resp, err := cs[int(bnext.Add(1))%len(cs)].SignArtifacts(context.Background(), breq)
		if err != nil {
			return err
		}
		for _, r := range resp.GetResults() {
			if r.GetCode() != 0 {
				return fmt.Errorf("batch item: code %d: %s", r.GetCode(), r.GetMessage())
			}
		}
		return nil
	})
	b.ReportMetric(got, "sigs/s")
	b.ReportMetric(batched, "batched-sigs/s")
	b.ReportMetric(0, "ns/op")
	return got, batched
}

// BenchmarkSignerSoft: the software keystore through the signer; the target
// is an absolute 10,000 signatures per second on the 2-core reference
// machine. The raw rate is single-goroutine ECDSA P-256 signing.
func BenchmarkSignerSoft(b *testing.B) {
	store, err := soft.Open(filepath.Join(b.TempDir(), "k.json"), []byte("bench-passphrase-0123456789"), true, time.Now)
	if err != nil {
		b.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sum := sha256.Sum256([]byte("message"))
	raw := rate(b, 1, rawDuration, func() error { _, err := ecdsa.SignASN1(rand.Reader, key, sum[:]); return err })
	throughSigner(b, store)
	b.ReportMetric(raw, "raw-1core-sigs/s")
}

// BenchmarkSignerVault: Vault Transit through the signer (coalesced with
// batch_input) against direct unbatched Transit calls from 16 clients; the
// target ratio is at least 2.
func BenchmarkSignerVault(b *testing.B) {
	srv, err := vaulttest.Start()
	if errors.Is(err, vaulttest.ErrNoVault) {
		b.Skip(err)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Stop)
	backend, err := vault.Open(vault.Config{Address: srv.Addr, Token: srv.RootToken})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := backend.Create(b.Context(), "raw", keys.ECDSAP256); err != nil {
		b.Fatal(err)
	}
	input := base64.StdEncoding.EncodeToString([]byte("message"))
	direct, err := srv.Client(16)
	if err != nil {
		b.Fatal(err)
	}
	raw := rate(b, 16, rawDuration, func() error {
		_, err := direct.Logical().Write("transit/sign/raw/sha2-256", map[string]any{"input": input, "marshaling_algorithm": "asn1"})
		return err
	})
	msgs := make([][]byte, 100)
	for i := range msgs {
		msgs[i] = []byte("message")
	}
	batched := 100 * rate(b, 4, rawDuration, func() error { _, err := backend.SignBatch(b.Context(), "raw", 1, msgs); return err })

	got, viaBatches := throughSigner(b, backend)
	b.ReportMetric(raw, "raw-unbatched-sigs/s")
	b.ReportMetric(batched, "raw-batch100-sigs/s")
	b.ReportMetric(got/raw, "ratio")
	b.ReportMetric(viaBatches/raw, "batched-ratio")
}

// BenchmarkSignerPKCS11: a SoftHSM2 token through the signer against direct
// PKCS#11 signs through the back end from as many goroutines as sessions;
// the target ratio is at least 0.8.
func BenchmarkSignerPKCS11(b *testing.B) {
	tok, err := softhsmtest.New("custody-bench")
	if errors.Is(err, softhsmtest.ErrMissing) && os.Getenv(softhsmtest.RequireEnv) == "" {
		b.Skip(err)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tok.Close() })
	backend, err := pkcs11.Open(pkcs11.Config{ModulePath: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { backend.Close() })
	if _, err := backend.Create(b.Context(), "raw", keys.ECDSAP256); err != nil {
		b.Fatal(err)
	}
	msg := []byte("message")
	raw := rate(b, 2*runtime.GOMAXPROCS(0), rawDuration, func() error { _, err := backend.Sign(b.Context(), "raw", 1, msg); return err })
	got, viaBatches := throughSigner(b, backend)
	b.ReportMetric(raw, "raw-sigs/s")
	b.ReportMetric(got/raw, "ratio")
	b.ReportMetric(viaBatches/raw, "batched-ratio")
}
