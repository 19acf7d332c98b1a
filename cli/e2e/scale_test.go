package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
)

// TestLedgerAtScale seeds the dev stack's catalog with 10,000 artifacts the
// way the publisher records them (a provenance statement signed by the
// signer in batches, then RecordArtifact as the publisher's identity; no
// blobs, which the catalog does not hold), built from each other as a
// binary tree, and checks that custody lineage and custody audit answer
// about them: the whole tree below the root, the path up from a leaf, and
// the verified audit trail of one artifact.
func TestLedgerAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds 10,000 artifacts")
	}
	s := start(t)
	signer := signerv1.NewSignerServiceClient(s.connAsService("publisher", "signer"))
	cat := catalogv1.NewCatalogServiceClient(s.connAsService("publisher", "catalog"))
	builder := "spiffe://" + s.info.TrustDomain + "/builder/ci"
	const n = 10000
	name := func(i int) string { return fmt.Sprintf("scale-%05d", i) }
	digests := make([]string, n)
	for i := range digests {
		sum := sha256.Sum256(fmt.Appendf(nil, "scale artifact %d %d", i, time.Now().UnixNano()))
		digests[i] = "sha256:" + hex.EncodeToString(sum[:])
	}
	now := time.Now().UTC()
	artifact := func(i int) attest.Artifact {
		a := attest.Artifact{Name: name(i), Version: "1.0.0", Digest: digests[i], Channel: "staging", BuilderID: builder,
			StartedOn: now, FinishedOn: now}
		if i > 0 { // built from its parent in the tree
			parent := (i - 1) / 2
			a.Dependencies = []attest.ResourceDescriptor{{Name: name(parent) + "@1.0.0",
				Digest:      map[string]string{"sha256": strings.TrimPrefix(digests[parent], "sha256:")},
				Annotations: map[string]string{attest.AnnotationKind: attest.KindArtifact}}}
		}
		return a
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	seeded := time.Now()
	const batch = 256
	var wg sync.WaitGroup
	errs := make(chan error, n/batch+1)
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for from := range work {
				to := min(from+batch, n)
				req := &signerv1.SignArtifactsRequest{}
				for i := from; i < to; i++ {
					st, err := attest.NewProvenance(artifact(i))
					if err != nil {
						errs <- err
						return
					}
					req.Items = append(req.Items, &signerv1.SignArtifactRequest{Channel: "staging", Statement: st})
				}
				resp, err := signer.SignArtifacts(ctx, req)
				if err != nil {
					errs <- fmt.Errorf("sign %d..%d: %w", from, to, err)
					return
				}
				var rwg sync.WaitGroup
				sem := make(chan struct{}, 32)
				for k, res := range resp.GetResults() {
					i := from + k
					if res.GetCode() != 0 || res.GetEnvelope() == nil {
						errs <- fmt.Errorf("sign %s: code %d: %s", name(i), res.GetCode(), res.GetMessage())
						return
					}
					sem <- struct{}{}
					rwg.Go(func() {
						defer func() { <-sem }()
						_, err := cat.RecordArtifact(ctx, &catalogv1.RecordArtifactRequest{
							Artifact: &catalogv1.Artifact{Name: name(i), Version: "1.0.0", Digest: digests[i], Size: 1, Channel: "staging",
								BuilderId: builder, CreatedAt: timestamppb.New(now)},
							Envelope: res.GetEnvelope()})
						if err != nil {
							errs <- fmt.Errorf("record %s: %w", name(i), err)
						}
					})
				}
				rwg.Wait()
			}
		})
	}
	for from := 0; from < n; from += batch {
		select {
		case work <- from:
		case err := <-errs:
			t.Fatal(err)
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	t.Logf("seeded %d artifacts in %s", n, time.Since(seeded).Round(time.Millisecond))

	var lin struct {
		Edges []struct {
			ArtifactDigest string `json:"artifact_digest"`
			Dependency     string `json:"dependency"`
			Depth          int    `json:"depth"`
		} `json:"edges"`
		Truncated bool `json:"truncated"`
	}
	took := time.Now()
	mustJSON(t, s.mustCustody("lineage", name(0)+"@1.0.0", "--down", "--json"), &lin)
	t.Logf("custody lineage --down over %d artifacts: %d edges in %s (the CLI's whole run)", n, len(lin.Edges), time.Since(took).Round(time.Millisecond))
	if len(lin.Edges) != n-1 || lin.Truncated {
		t.Fatalf("lineage down from the root: %d edges (truncated %v), want %d", len(lin.Edges), lin.Truncated, n-1)
	}
	below := map[string]bool{}
	for _, e := range lin.Edges {
		below[e.ArtifactDigest] = true
	}
	for i := 1; i < n; i++ {
		if !below[digests[i]] {
			t.Fatalf("%s is not below the root", name(i))
		}
	}
	// Up from the last leaf: its ancestors one level each, to the root.
	mustJSON(t, s.mustCustody("lineage", name(n-1)+"@1.0.0", "--up", "--json"), &lin)
	var chain []int
	for i := n - 1; i > 0; i = (i - 1) / 2 {
		chain = append(chain, i)
	}
	if len(lin.Edges) != len(chain) {
		t.Fatalf("lineage up from %s: %d edges, want %d", name(n-1), len(lin.Edges), len(chain))
	}
	for _, e := range lin.Edges {
		child := chain[e.Depth-1]
		if e.ArtifactDigest != digests[child] || e.Dependency != digests[(child-1)/2] {
			t.Fatalf("lineage up from %s: edge %+v, want %s → %s at depth %d", name(n-1), e, name(child), name((child-1)/2), e.Depth)
		}
	}
	var path struct {
		Found bool  `json:"found"`
		Edges []any `json:"edges"`
	}
	mustJSON(t, s.mustCustody("lineage", name(0)+"@1.0.0", "--path", name(n-1)+"@1.0.0", "--json"), &path)
	if !path.Found || len(path.Edges) != len(chain) {
		t.Fatalf("path root → %s: %+v, want %d edges", name(n-1), path, len(chain))
	}

	// The audit trail of one artifact in the middle, every entry proved.
	var rep struct {
		Digest string `json:"digest"`
		Events []struct {
			Type string `json:"type"`
		} `json:"events"`
	}
	took = time.Now()
	mustJSON(t, s.mustCustody("audit", name(n/2)+"@1.0.0", "--json"), &rep)
	t.Logf("custody audit on a catalog of %d artifacts: %s", n, time.Since(took).Round(time.Millisecond))
	if rep.Digest != digests[n/2] || len(rep.Events) == 0 || rep.Events[0].Type != "artifact.published" {
		t.Fatalf("audit of %s: %+v", name(n/2), rep)
	}
}
