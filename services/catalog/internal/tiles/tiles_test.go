package tiles_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/sync/errgroup"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/tiles"
	"github.com/custody-dev/custody/services/catalog/internal/translog"
	"github.com/custody-dev/custody/services/catalog/internal/translog/cosigntest"
)

const origin = "custody.test/log"

// served is a co-signed log behind the tiles handler over HTTPS.
type served struct {
	log      *translog.Log
	cosigner *cosigntest.Cosigner
	vkey     string
	url      string
	client   *http.Client
	leaves   [][]byte
}

func serve(t *testing.T, skey, vkey string) *served {
	t.Helper()
	c, err := cosigntest.New(vkey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := translog.Open(t.Context(), translog.Config{Dir: dir, SignerKey: skey, Cosigner: c,
		CosignWait: 5 * time.Second, CosignRetryMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	h := &tiles.Handler{Dir: dir, Checkpoint: func(ctx context.Context) ([]byte, error) {
		b, _, err := l.Checkpoint(ctx)
		return b, err
	}}
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	return &served{log: l, cosigner: c, vkey: vkey, url: srv.URL + "/", client: srv.Client()}
}

func (s *served) append(t *testing.T, prefix string, n int) {
	t.Helper()
	leaves := make([][]byte, n)
	var g errgroup.Group
	g.SetLimit(64)
	for i := range n {
		g.Go(func() error {
			leaf := fmt.Appendf(nil, "%s entry %d", prefix, i)
			p, err := s.log.Append(t.Context(), leaf)
			if err != nil {
				return err
			}
			leaves[p.Index-uint64(len(s.leaves))] = leaf
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	s.leaves = append(s.leaves, leaves...)
}

func (s *served) fetcher(t *testing.T) *client.HTTPFetcher {
	t.Helper()
	u, err := url.Parse(s.url)
	if err != nil {
		t.Fatal(err)
	}
	f, err := client.NewHTTPFetcher(u, s.client)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// standardCheckpoint fetches and verifies the served checkpoint with
// transparency-dev/formats and golang.org/x/mod/sumdb/note only: the log's
// signature and the signer's cosignature/v1.
func (s *served) standardCheckpoint(t *testing.T, f *client.HTTPFetcher) *log.Checkpoint {
	t.Helper()
	raw, err := f.ReadCheckpoint(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	logV, err := note.NewVerifier(s.vkey)
	if err != nil {
		t.Fatal(err)
	}
	cosigV, err := fnote.NewVerifierForCosignatureV1(s.cosigner.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	cp, _, n, err := log.ParseCheckpoint(raw, origin, logV, cosigV)
	if err != nil {
		t.Fatalf("formats log.ParseCheckpoint: %v", err)
	}
	cosigned := false
	for _, sig := range n.Sigs {
		if sig.Name == cosignerName(s) && sig.Hash == cosigV.KeyHash() {
			if ts, err := fnote.CoSigV1Timestamp(sig); err != nil || time.Since(ts) > time.Minute {
				t.Errorf("cosignature timestamp %s, %v", ts, err)
			}
			cosigned = true
		}
	}
	if !cosigned {
		t.Fatalf("served checkpoint carries no verified cosignature: %+v", n.Sigs)
	}
	// The cosignature alone verifies too: it is what the trust root lists.
	if _, err := note.Open(raw, note.VerifierList(cosigV)); err != nil {
		t.Fatalf("sumdb note with the cosignature/v1 verifier: %v", err)
	}
	return cp
}

func cosignerName(s *served) string {
	name, _, _ := strings.Cut(s.cosigner.VerifierKey(), "+")
	return name
}

// TestStandardClientsVerifyTheServedLog reads the log over HTTPS with
// Tessera's HTTP fetcher and verifies everything with the standard
// libraries: checkpoint and cosignature (formats, sumdb/note), entries
// rebuilding the root, inclusion and consistency proofs from the tiles
// (merkle, RFC 6962 hasher).
func TestStandardClientsVerifyTheServedLog(t *testing.T) {
	skey, vkey, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, skey, vkey)
	s.append(t, "a", 70)
	f := s.fetcher(t)
	older := s.standardCheckpoint(t, f)
	if older.Size != 70 {
		t.Fatalf("checkpoint size %d, want 70", older.Size)
	}

	s.append(t, "b", 230) // past the first full tile and entry bundle
	newer := s.standardCheckpoint(t, f)
	if newer.Size != 300 {
		t.Fatalf("checkpoint size %d, want 300", newer.Size)
	}
	ctx := t.Context()

	// The entry bundles rebuild the checkpoint's root.
	tree := testonly.New(rfc6962.DefaultHasher)
	for i := uint64(0); i*256 < newer.Size; i++ {
		b, err := client.GetEntryBundle(ctx, f.ReadEntryBundle, i, newer.Size)
		if err != nil {
			t.Fatal(err)
		}
		for j, e := range b.Entries {
			if string(e) != string(s.leaves[i*256+uint64(j)]) {
				t.Fatalf("entry %d = %q, want %q", i*256+uint64(j), e, s.leaves[i*256+uint64(j)])
			}
		}
		tree.AppendData(b.Entries...)
	}
	if string(tree.Hash()) != string(newer.Hash) {
		t.Fatal("the served entries do not rebuild the checkpoint's root")
	}

	pb, err := client.NewProofBuilder(ctx, newer.Size, f.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint64{0, 69, 255, 256, 299} {
		p, err := pb.InclusionProof(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, newer.Size, rfc6962.DefaultHasher.HashLeaf(s.leaves[i]), p, newer.Hash); err != nil {
			t.Errorf("inclusion of %d: %v", i, err)
		}
	}
	cons, err := pb.ConsistencyProof(ctx, older.Size, newer.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, older.Size, newer.Size, cons, older.Hash, newer.Hash); err != nil {
		t.Errorf("consistency %d → %d: %v", older.Size, newer.Size, err)
	}
}

// TestForkedLogIsDetected runs two logs with the same key that diverge
// after a common prefix: each serves a validly signed checkpoint, and the
// standard consistency check refuses the one against the other.
func TestForkedLogIsDetected(t *testing.T) {
	skey, vkey, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	honest, forked := serve(t, skey, vkey), serve(t, skey, vkey)
	honest.append(t, "common", 10)
	forked.append(t, "common", 10)
	honest.append(t, "honest", 5)
	forked.append(t, "forged", 7)

	hf, ff := honest.fetcher(t), forked.fetcher(t)
	seen := honest.standardCheckpoint(t, hf)
	other := forked.standardCheckpoint(t, ff)
	pb, err := client.NewProofBuilder(t.Context(), other.Size, ff.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := pb.ConsistencyProof(t.Context(), seen.Size, other.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, seen.Size, other.Size, cons, seen.Hash, other.Hash); err == nil {
		t.Fatal("a forked log proved consistent with the honest one")
	}
	// And through Custody's verifier, which reports it as a mismatch.
	a := &tlog.Checkpoint{Origin: origin, Size: seen.Size, Hash: seen.Hash}
	b := &tlog.Checkpoint{Origin: origin, Size: other.Size, Hash: other.Hash}
	if err := tlog.VerifyConsistency(a, b, cons); err == nil {
		t.Fatal("tlog.VerifyConsistency accepted the fork")
	}
}

func TestCacheHeadersAndRefusals(t *testing.T) {
	skey, vkey, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, skey, vkey)
	s.append(t, "x", 260) // one full tile and bundle, then partial ones
	get := func(method, path string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, strings.TrimSuffix(s.url, "/")+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for _, tt := range []struct {
		method, path string
		code         int
		cache        string
	}{
		{"GET", "/checkpoint", 200, tiles.CacheCheckpoint},
		{"HEAD", "/checkpoint", 200, tiles.CacheCheckpoint},
		{"GET", "/tile/0/000", 200, tiles.CacheImmutable},
		{"GET", "/tile/entries/000", 200, tiles.CacheImmutable},
		{"GET", "/tile/0/001.p/4", 200, tiles.CachePartial},
		{"GET", "/tile/entries/001.p/4", 200, tiles.CachePartial},
		{"GET", "/tile/1/000.p/1", 200, tiles.CachePartial},
		{"GET", "/tile/0/002", 404, "no-store"},
		{"GET", "/tile/0/1", 404, "no-store"},
		{"GET", "/tile/0/x000/000", 404, "no-store"},
		{"GET", "/tile/0/000.p/0", 404, "no-store"},
		{"GET", "/tile/0/000.p/256", 404, "no-store"},
		{"GET", "/tile/64/000", 404, "no-store"},
		{"GET", "/tile/0/../../catalog.db", 404, "no-store"},
		{"GET", "/tile/entries/%2e%2e/checkpoint", 404, "no-store"},
		{"GET", "/checkpoint?x=1", 404, "no-store"},
		{"GET", "/log/checkpoint", 404, "no-store"},
		{"POST", "/checkpoint", 405, ""},
		{"PUT", "/tile/0/000", 405, ""},
	} {
		resp := get(tt.method, tt.path)
		if resp.StatusCode != tt.code || resp.Header.Get("Cache-Control") != tt.cache {
			t.Errorf("%s %s = %d, Cache-Control %q; want %d, %q", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Cache-Control"), tt.code, tt.cache)
		}
		if resp.Header.Get("Strict-Transport-Security") == "" {
			t.Errorf("%s %s: no HSTS", tt.method, tt.path)
		}
	}
}

func TestCheckpointUnavailable(t *testing.T) {
	h := &tiles.Handler{Dir: t.TempDir(), Checkpoint: func(context.Context) ([]byte, error) { return nil, translog.ErrNotCosigned }}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/checkpoint", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Cache-Control") != "no-store" || strings.Contains(rec.Body.String(), "co-signed checkpoint") == false {
		t.Errorf("checkpoint without a co-signed one = %d %q %q", rec.Code, rec.Header().Get("Cache-Control"), rec.Body.String())
	}
}

func FuzzResource(f *testing.F) {
	for _, p := range []string{"/tile/0/000", "/tile/entries/x001/234.p/7", "/tile/0/../x", "/tile/63/x999/x999/x999/x999/x999/x999/999.p/255"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rel, _, ok := tiles.Resource(path)
		if !ok {
			return
		}
		if "/"+rel != path || strings.Contains(rel, "..") || strings.Contains(rel, "//") || !strings.HasPrefix(rel, "tile/") {
			t.Fatalf("Resource(%q) accepted as %q", path, rel)
		}
	})
}
