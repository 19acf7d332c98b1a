// Package bench measures the edge over HTTPS next to peers measured in the
// same run: cached 1 MiB objects per second against nginx (Debian package)
// serving the same file with TLS, both loaded by h2load; and one 1 GiB fetch
// through the edge, miss and hit, against the lower of `dd conv=fsync` to
// the same filesystem and one core's SHA-256 plus two AES-GCM passes.
// `make bench-edge` runs it.
package bench

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custody-dev/custody/libs/benchlimit"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/token"
	"github.com/custody-dev/custody/services/edge/internal/cache"
	"github.com/custody-dev/custody/services/edge/internal/server"
)

const (
	bigSize   = 1 << 30
	smallSize = 1 << 20
	runs      = 3
	// The h2load load, the same for nginx and the edge.
	h2Requests, h2Clients, h2Streams = 2000, 8, 4
)

// origin is the publisher's Download over mTLS gRPC, from memory in the
// publisher's 1 MiB messages: the miss measures the edge, not the store.
type origin struct {
	publisherv1.UnimplementedPublisherServiceServer
	blobs map[string][]byte
}

func (o *origin) Download(req *publisherv1.DownloadRequest, stream publisherv1.PublisherService_DownloadServer) error {
	b := o.blobs[req.GetDigest()]
	for i := 0; i == 0 || i < len(b); i += 1 << 20 {
		msg := &publisherv1.DownloadResponse{Chunk: b[i:min(i+1<<20, len(b))]}
		if i == 0 {
			msg.Size = int64(len(b))
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	return nil
}

// noStops is a stop state with no stop.
type noStops struct{}

func (noStops) Check(string, string, time.Time, time.Duration) error { return nil }

type edge struct {
	url   string
	cache *cache.Cache
	key   ed25519.PrivateKey
	ca    *x509.CertPool
}

func digestOf(b []byte) (string, string) {
	sum := sha256.Sum256(b)
	h := hex.EncodeToString(sum[:])
	return "sha256:" + h, h
}

// startEdge runs the edge's HTTPS handler as cmd/edge wires it, with its
// cache in dir and the origin over mTLS gRPC.
func startEdge(b *testing.B, dir, certFile, keyFile string, blobs map[string][]byte) *edge {
	td := identitytest.New(b, "custody.bench")
	tel := telemetry.Discard("bench")
	quiet := slog.New(slog.DiscardHandler)
	srv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(b, "/service/publisher"), TrustDomain: td.TD, Logger: quiet, Telemetry: tel,
		Policy: rpc.Policy{rpc.Method(publisherv1.PublisherService_ServiceDesc, "Download"): {rpc.ID(td.ID("/edge/bench"))}}})
	publisherv1.RegisterPublisherServiceServer(srv.Server, &origin{blobs: blobs})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(srv.Stop)
	conn, err := rpc.Dial(l.Addr().String(), td.ID("/service/publisher"), td.Source(b, "/edge/bench"), tel)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	c, _, err := cache.New(cache.Config{Dir: dir, Origin: server.Publisher{Client: publisherv1.NewPublisherServiceClient(conn)}})
	if err != nil {
		b.Fatal(err)
	}
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		b.Fatal(err)
	}
	// The access log is written as in production (JSON), to nowhere.
	hs := &http.Server{
		Handler: &server.Handler{Cache: c, Keys: server.StaticKeys{token.KeyID(pub): pub}, Stops: noStops{}, Limits: token.DefaultLimits,
			Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: tel.Metrics, HTTP: server.NewHTTPMetrics(prometheus.NewRegistry()), Now: time.Now},
		TLSConfig:         server.TLSConfig(cert),
		ReadHeaderTimeout: 10 * time.Second,
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go hs.ServeTLS(hl, "", "")
	b.Cleanup(func() { hs.Close() })
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(certFile)
	pool.AppendCertsFromPEM(pem)
	return &edge{url: "https://" + hl.Addr().String(), cache: c, key: key, ca: pool}
}

func (e *edge) blobURL(b *testing.B, digest string) string {
	now := time.Now()
	tok, err := token.Mint(e.key, token.Claims{Digest: digest, DecisionID: "bench", IssuedAt: now, Expires: now.Add(50 * time.Minute)})
	if err != nil {
		b.Fatal(err)
	}
	return e.url + "/v1/blobs/sha256/" + strings.TrimPrefix(digest, "sha256:") + "?token=" + tok
}

// fetch is what custody fetch does with an edge's answer: hash it, write
// it to a file in dir, fsync; it returns MB/s.
func fetch(b *testing.B, client *http.Client, url, digest, dir string) float64 {
	start := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET: %s", resp.Status)
	}
	out, err := os.Create(filepath.Join(dir, "fetched"))
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(out.Name())
	defer out.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(h, out), resp.Body, make([]byte, 1<<20))
	if err != nil {
		b.Fatal(err)
	}
	if err := out.Sync(); err != nil {
		b.Fatal(err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest || n != bigSize {
		b.Fatalf("fetched %d bytes hashing to %s, want %s", n, got, digest)
	}
	return float64(n) / time.Since(start).Seconds() / 1e6
}

// selfSigned writes a P-256 certificate for 127.0.0.1 and its key.
func selfSigned(b *testing.B, dir string) (string, string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func freePort(b *testing.B) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startNginx serves dir/www over HTTPS (HTTP/2) with the same certificate,
// as a child process in dir; it returns the base URL.
func startNginx(b *testing.B, dir, certFile, keyFile string) string {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		b.Fatal("nginx not found: run scripts/install-nginx.sh (make bench-edge does)")
	}
	port := freePort(b)
	user := ""
	if os.Getuid() == 0 {
		user = "user root;" // the workers must read files in a private temp dir
	}
	conf := fmt.Sprintf(`%s
worker_processes auto;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log;
events { worker_connections 1024; }
http {
  access_log %[2]s/access.log;
  client_body_temp_path %[2]s/tmp-body;
  proxy_temp_path %[2]s/tmp-proxy;
  fastcgi_temp_path %[2]s/tmp-fastcgi;
  uwsgi_temp_path %[2]s/tmp-uwsgi;
  scgi_temp_path %[2]s/tmp-scgi;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:%[3]d ssl http2;
    ssl_certificate %[4]s;
    ssl_certificate_key %[5]s;
    ssl_protocols TLSv1.2 TLSv1.3;
    root %[2]s/www;
  }
}
`, user, dir, port, certFile, keyFile)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confFile, "-e", filepath.Join(dir, "error.log"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return url
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			b.Fatalf("nginx did not listen: %s", log)
		}
	}
}

var (
	h2Rate = regexp.MustCompile(`finished in [0-9.]+s, ([0-9.]+) req/s`)
	h2Done = regexp.MustCompile(`requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded`)
	h2OK   = regexp.MustCompile(`status codes: (\d+) 2xx`)
)

// h2load returns the requests per second h2load measured against url;
// every request must succeed with a 2xx.
func h2load(b *testing.B, url string) float64 {
	out, err := exec.Command("h2load", "-n", strconv.Itoa(h2Requests), "-c", strconv.Itoa(h2Clients), "-m", strconv.Itoa(h2Streams), url).CombinedOutput()
	if err != nil {
		b.Fatalf("h2load: %v\n%s", err, out)
	}
	rate, done, ok := h2Rate.FindSubmatch(out), h2Done.FindSubmatch(out), h2OK.FindSubmatch(out)
	if rate == nil || done == nil || ok == nil || string(done[2]) != strconv.Itoa(h2Requests) || string(ok[1]) != strconv.Itoa(h2Requests) {
		b.Fatalf("h2load did not finish every request with a 2xx:\n%s", out)
	}
	r, _ := strconv.ParseFloat(string(rate[1]), 64)
	return r
}

// BenchmarkEdge prints, for three runs, the median and range of each
// figure and its ratio to its target.
func BenchmarkEdge(b *testing.B) {
	if _, err := exec.LookPath("h2load"); err != nil {
		b.Fatal("h2load not found: run scripts/install-nginx.sh (make bench-edge does)")
	}
	dir := b.TempDir()
	certFile, keyFile := selfSigned(b, dir)
	big := make([]byte, bigSize)
	rand.Read(big)
	small := big[:smallSize:smallSize]
	bigDigest, bigHex := digestOf(big)
	smallDigest, smallHex := digestOf(small)
	cacheDir := filepath.Join(dir, "cache")
	e := startEdge(b, cacheDir, certFile, keyFile, map[string][]byte{bigDigest: big, smallDigest: small})
	www := filepath.Join(dir, "www", "v1", "blobs", "sha256")
	if err := os.MkdirAll(www, 0o700); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(www, smallHex), small, 0o600); err != nil {
		b.Fatal(err)
	}
	nginx := startNginx(b, dir, certFile, keyFile)
	// The transport custody fetch uses (HTTP/1.1: no ForceAttemptHTTP2).
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.ca, MinVersion: tls.VersionTLS12}}}
	smallURL := e.blobURL(b, smallDigest)
	// Cache the small object (a miss) before measuring hits.
	if resp, err := client.Get(smallURL); err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("warm the edge: %v", err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	bigURL := e.blobURL(b, bigDigest)

	var dd, cr, miss, hit, edgeRate, nginxRate []float64
	b.ResetTimer()
	for i := range runs {
		r, err := benchlimit.DDFsync(dir)
		if err != nil {
			b.Fatal(err)
		}
		dd = append(dd, r)
		cr = append(cr, benchlimit.CryptoRate(big[:64<<20], 1<<20))
		if _, err := e.cache.Purge(bigHex); err != nil {
			b.Fatal(err)
		}
		miss = append(miss, fetch(b, client, bigURL, bigDigest, dir))
		hit = append(hit, fetch(b, client, bigURL, bigDigest, dir))
		// Alternate which goes first: the machine's load drifts.
		if i%2 == 0 {
			nginxRate = append(nginxRate, h2load(b, nginx+"/v1/blobs/sha256/"+smallHex+"?token=unused"))
			edgeRate = append(edgeRate, h2load(b, smallURL))
		} else {
			edgeRate = append(edgeRate, h2load(b, smallURL))
			nginxRate = append(nginxRate, h2load(b, nginx+"/v1/blobs/sha256/"+smallHex+"?token=unused"))
		}
	}
	b.StopTimer()
	limit := min(benchlimit.Median(dd), benchlimit.Median(cr))
	show := func(xs []float64, unit string) string {
		return fmt.Sprintf("median %.0f %s (range %.0f-%.0f)", benchlimit.Median(xs), unit, slices.Min(xs), slices.Max(xs))
	}
	ratio := func(name string, got, target float64) {
		verdict := "meets"
		if got < target {
			verdict = "BELOW"
		}
		fmt.Printf("  %-28s %.2f (target >= %.2f: %s)\n", name, got, target, verdict)
	}
	fmt.Printf("edge bench, %d runs, GOMAXPROCS=%s, %d CPUs\n", runs, os.Getenv("GOMAXPROCS"), nproc())
	fmt.Printf("limit: dd conv=fsync %s, SHA-256 + 2×AES-GCM on one core %s; limit = %.0f MB/s\n", show(dd, "MB/s"), show(cr, "MB/s"), limit)
	fmt.Printf("1 GiB fetch through the edge (client hashes, writes, fsyncs): miss %s, hit %s\n", show(miss, "MB/s"), show(hit, "MB/s"))
	fmt.Printf("cached 1 MiB objects over HTTPS, h2load -n %d -c %d -m %d: edge %s, nginx %s\n",
		h2Requests, h2Clients, h2Streams, show(edgeRate, "objects/s"), show(nginxRate, "objects/s"))
	perRun := make([]float64, runs)
	for i := range perRun {
		perRun[i] = edgeRate[i] / nginxRate[i]
	}
	fmt.Printf("ratios (medians):\n")
	ratio("hit / limit", benchlimit.Median(hit)/limit, 0.70)
	ratio("miss / limit", benchlimit.Median(miss)/limit, 0.50)
	ratio("edge / nginx 1 MiB objects", benchlimit.Median(edgeRate)/benchlimit.Median(nginxRate), 0.70)
	fmt.Printf("  edge / nginx per run: %.2f-%.2f\n", slices.Min(perRun), slices.Max(perRun))
	b.ReportMetric(benchlimit.Median(hit)/limit, "hit/limit")
	b.ReportMetric(benchlimit.Median(miss)/limit, "miss/limit")
	b.ReportMetric(benchlimit.Median(edgeRate)/benchlimit.Median(nginxRate), "edge/nginx")
}

func nproc() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}
