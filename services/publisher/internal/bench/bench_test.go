// Package bench measures publish and download throughput of 1 GiB through
// the publisher over mTLS gRPC (hashed, stored and fsynced by the real
// store; read back, checked and verified by the client), next to the
// machine's limit measured in the same run: the lower of `dd conv=fsync` to
// the same filesystem and one core's SHA-256 plus two AES-GCM passes (TLS
// and storage encryption). `make bench` runs it.
package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/benchlimit"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/services/publisher/internal/bindings"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/local"
	"github.com/custody-dev/custody/services/publisher/internal/kek/soft"
	"github.com/custody-dev/custody/services/publisher/internal/resume"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
	"github.com/custody-dev/custody/services/publisher/internal/server"
)

const (
	size = 1 << 30
	runs = 3
)

// signer and catalog are the publisher's dependencies, out of the
// measured path: they see one small request per upload.
type signer struct {
	signerv1.UnimplementedSignerServiceServer
}

func (signer) SignArtifact(_ context.Context, req *signerv1.SignArtifactRequest) (*signerv1.SignArtifactResponse, error) {
	env, err := attest.SignEnvelope(attest.PayloadType, req.GetStatement(), "k", func([]byte) ([]byte, error) { return []byte("sig"), nil })
	return &signerv1.SignArtifactResponse{Envelope: env, KeyId: "k"}, err
}

type catalog struct {
	catalogv1.UnimplementedCatalogServiceServer
	mu sync.Mutex
	n  int64
}

func (c *catalog) RecordArtifact(context.Context, *catalogv1.RecordArtifactRequest) (*catalogv1.RecordArtifactResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return &catalogv1.RecordArtifactResponse{Entry: &catalogv1.LogEntry{Index: c.n}, Created: true}, nil
}

func serve(b *testing.B, cfg rpc.ServerConfig, register func(*grpc.Server)) string {
	srv := rpc.NewServer(cfg)
	register(srv.Server)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(srv.Stop)
	return l.Addr().String()
}

// publisher starts the publisher API as cmd/publisher wires it, with the
// same transport limits, over a store in dir.
func publisher(b *testing.B, dir string) (publisherv1.PublisherServiceClient, publisherv1.PublisherServiceClient) {
	td := identitytest.New(b, "custody.bench")
	tel := telemetry.Discard("bench")
	quiet := slog.New(slog.DiscardHandler)
	pub := rpc.ID(td.ID("/service/publisher"))
	sAddr := serve(b, rpc.ServerConfig{Source: td.Source(b, "/service/signer"), TrustDomain: td.TD, Logger: quiet, Telemetry: tel,
		Policy: rpc.Policy{rpc.Method(signerv1.SignerService_ServiceDesc, "SignArtifact"): {pub}}},
		func(s *grpc.Server) { signerv1.RegisterSignerServiceServer(s, signer{}) })
	cAddr := serve(b, rpc.ServerConfig{Source: td.Source(b, "/service/catalog"), TrustDomain: td.TD, Logger: quiet, Telemetry: tel,
		Policy: rpc.Policy{rpc.Method(catalogv1.CatalogService_ServiceDesc, "RecordArtifact"): {pub}}},
		func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, &catalog{}) })
	src := td.Source(b, "/service/publisher")
	sc, _ := rpc.Dial(sAddr, td.ID("/service/signer"), src, tel)
	cc, _ := rpc.Dial(cAddr, td.ID("/service/catalog"), src, tel)
	b.Cleanup(func() { sc.Close(); cc.Close() })
	// The store the publisher runs: encrypted under a per-blob data key
	// wrapped by the dev key-encryption key.
	objects, err := local.New(filepath.Join(dir, "blobs"))
	if err != nil {
		b.Fatal(err)
	}
	k, err := soft.Open(filepath.Join(dir, "kek.json"))
	if err != nil {
		b.Fatal(err)
	}
	blobs := sealed.New(objects, k, quiet)
	binds, err := bindings.Open(filepath.Join(dir, "bindings"))
	if err != nil {
		b.Fatal(err)
	}
	api := server.New(blobs, binds, signerv1.NewSignerServiceClient(sc), catalogv1.NewCatalogServiceClient(cc), quiet, tel.Metrics)
	partial, err := resume.Open(resume.Config{Dir: filepath.Join(dir, "partial"), TTL: time.Hour, MaxPerCaller: 4, KEK: k})
	if err != nil {
		b.Fatal(err)
	}
	api.SetResume(partial)
	cfg := rpc.ServerConfig{Source: src, TrustDomain: td.TD, Policy: server.Policy(td.TD), Logger: quiet, Telemetry: tel}
	server.Transport(&cfg)
	addr := serve(b, cfg,
		func(s *grpc.Server) { publisherv1.RegisterPublisherServiceServer(s, api) })
	dial := func(as string) publisherv1.PublisherServiceClient {
		c, err := rpc.Dial(addr, td.ID("/service/publisher"), td.Source(b, as), tel, server.DialOptions()...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return publisherv1.NewPublisherServiceClient(c)
	}
	return dial("/builder/ci"), dial("/edge/bench")
}

// pattern is 1 GiB made of a 16 MiB random block; neither hashing nor
// encryption gains from the repetition.
type pattern struct {
	block []byte
	off   int64
}

func (p *pattern) next(buf []byte) int {
	n := min(int64(len(buf)), size-p.off)
	for i := int64(0); i < n; {
		i += int64(copy(buf[i:n], p.block[(p.off+i)%int64(len(p.block)):]))
	}
	p.off += n
	return int(n)
}

// publish uploads 1 GiB; with an upload id it is resumable, as `custody
// publish` sends it, and the publisher keeps its bytes in a partial file
// before the store takes them.
func publish(ctx context.Context, c publisherv1.PublisherServiceClient, block []byte, version, uploadID string) (string, error) {
	stream, err := c.Upload(ctx)
	if err != nil {
		return "", err
	}
	h := &publisherv1.UploadHeader{Name: "bench", Version: version, Channel: "dev", Size: size, UploadId: uploadID}
	if err := stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Header{Header: h}}); err != nil {
		_, err = stream.CloseAndRecv()
		return "", err
	}
	p := &pattern{block: block}
	buf := make([]byte, server.ChunkSize)
	for {
		n := p.next(buf)
		if n == 0 {
			break
		}
		if err := stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Chunk{Chunk: buf[:n]}}); err != nil {
			_, err = stream.CloseAndRecv()
			return "", err
		}
	}
	resp, err := stream.CloseAndRecv()
	return resp.GetDigest(), err
}

// download reads the blob back and verifies its digest, as an edge does.
func download(ctx context.Context, c publisherv1.PublisherServiceClient, digest string) error {
	stream, err := c.Download(ctx, &publisherv1.DownloadRequest{Digest: digest})
	if err != nil {
		return err
	}
	h := sha256.New()
	var n int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		h.Write(msg.GetChunk())
		n += int64(len(msg.GetChunk()))
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest || n != size {
		return fmt.Errorf("downloaded %d bytes hashing to %s, want %s", n, got, digest)
	}
	return nil
}

func BenchmarkPublisher1GiB(b *testing.B) {
	dir := b.TempDir()
	block := make([]byte, 16<<20)
	rand.Read(block)
	var dd, cr []float64
	for range runs {
		r, err := benchlimit.DDFsync(dir)
		if err != nil {
			b.Fatal(err)
		}
		dd = append(dd, r)
		cr = append(cr, benchlimit.CryptoRate(block, server.ChunkSize))
	}
	limit := min(benchlimit.Median(dd), benchlimit.Median(cr))
	builder, edge := publisher(b, dir)
	var up, upResumable, down, upCPU, upResCPU, downCPU []float64
	b.ResetTimer()
	for i := range b.N * runs {
		start, cpu := time.Now(), cpuSeconds()
		digest, err := publish(b.Context(), builder, block, fmt.Sprint(i), "")
		if err != nil {
			b.Fatal(err)
		}
		up = append(up, size/time.Since(start).Seconds()/1e6)
		upCPU = append(upCPU, cpuSeconds()-cpu)
		start, cpu = time.Now(), cpuSeconds()
		if err := download(b.Context(), edge, digest); err != nil {
			b.Fatal(err)
		}
		down = append(down, size/time.Since(start).Seconds()/1e6)
		downCPU = append(downCPU, cpuSeconds()-cpu)
		// Each run stores the same blob again (temp file, fsync, link);
		// drop it so the next run writes a new file.
		h := digest[len("sha256:"):]
		os.Remove(filepath.Join(dir, "blobs", "sha256", h[:2], h))
		start, cpu = time.Now(), cpuSeconds()
		if _, err := publish(b.Context(), builder, block, fmt.Sprint(i, "-resumable"), fmt.Sprintf("bench-resumable-%06d", i)); err != nil {
			b.Fatal(err)
		}
		upResumable = append(upResumable, size/time.Since(start).Seconds()/1e6)
		upResCPU = append(upResCPU, cpuSeconds()-cpu)
		os.Remove(filepath.Join(dir, "blobs", "sha256", h[:2], h))
	}
	b.StopTimer()
	show := func(xs []float64) string {
		return fmt.Sprintf("median %.0f MB/s (range %.0f-%.0f, %.0f%% of the limit)", benchlimit.Median(xs), slices.Min(xs), slices.Max(xs), 100*benchlimit.Median(xs)/limit)
	}
	fmt.Printf("machine limit %.0f MB/s: dd conv=fsync median %.0f MB/s %v, SHA-256 + 2×AES-GCM on one core median %.0f MB/s %v\n",
		limit, benchlimit.Median(dd), round(dd), benchlimit.Median(cr), round(cr))
	fmt.Printf("publish  1 GiB over mTLS gRPC, %d runs: %s %v\n", len(up), show(up), round(up))
	fmt.Printf("publish  1 GiB resumable (upload id, as custody publish), %d runs: %s %v\n", len(upResumable), show(upResumable), round(upResumable))
	fmt.Printf("download 1 GiB over mTLS gRPC, %d runs: %s %v\n", len(down), show(down), round(down))
	// CPU time is steadier than wall clock on a shared machine: client and
	// publisher are this one process.
	secs := func(xs []float64) string {
		var b []byte
		for i, x := range xs {
			if i > 0 {
				b = append(b, ' ')
			}
			b = strconv.AppendFloat(b, x, 'f', 2, 64)
		}
		return "[" + string(b) + "]"
	}
	fmt.Printf("user+sys CPU per GiB (client and publisher): publish median %.2f s %s, resumable publish median %.2f s %s, download median %.2f s %s\n",
		benchlimit.Median(upCPU), secs(upCPU), benchlimit.Median(upResCPU), secs(upResCPU), benchlimit.Median(downCPU), secs(downCPU))
	verdict := func(what string, xs []float64) {
		got, v := 100*benchlimit.Median(xs)/limit, "met"
		if got < 70 {
			v = "MISSED"
		}
		fmt.Printf("target %-36s >= 70%% of the limit: %.0f%% %s\n", what, got, v)
	}
	verdict("publish 1 GiB", up)
	verdict("publish 1 GiB resumable (custody publish)", upResumable)
	verdict("download 1 GiB", down)
	b.ReportMetric(benchlimit.Median(up), "publish-MB/s")
	b.ReportMetric(benchlimit.Median(down), "download-MB/s")
	b.ReportMetric(limit, "limit-MB/s")
	b.ReportMetric(benchlimit.Median(up)/limit, "publish/limit")
	b.ReportMetric(benchlimit.Median(down)/limit, "download/limit")
}

// cpuSeconds is this process's user+sys CPU time so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func round(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x + 0.5)
	}
	return out
}
