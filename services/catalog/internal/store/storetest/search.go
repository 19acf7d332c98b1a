package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// searchFixture stores six logged artifacts and one pending one:
//
//	app@1.0.0  d1 stable  ci   repo-a c1 keyA  deployed to staging, prod
//	app@1.1.0  d2 stable  ci   repo-a c2 keyB  deployed to staging
//	app@2.0.0  d3 beta    ci   repo-a c3 keyA  (re-signed: keyA → keyC)
//	lib@1.0.0  d1 stable  ci2  repo-b c1 keyA
//	lib@1.1.0  d2 beta    ci2  repo-b c4 keyB  deployed to prod
//	tool@0.1.0 d3 stable  ci   repo-c c5 keyA
//	app@9.9.9  d1 stable  ci   repo-a c1 keyA  pending: never found
func searchFixture(t *testing.T, s catalog.Store) map[string]int64 {
	t.Helper()
	ctx := t.Context()
	rows := []struct{ name, version, digest, channel, builder, repo, commit, key string }{
		{"app", "1.0.0", d1, "stable", "ci", "repo-a", "c1", keyA},
		{"app", "1.1.0", d2, "stable", "ci", "repo-a", "c2", keyB},
		{"app", "2.0.0", d3, "beta", "ci", "repo-a", "c3", keyA},
		{"lib", "1.0.0", d1, "stable", "ci2", "repo-b", "c1", keyA},
		{"lib", "1.1.0", d2, "beta", "ci2", "repo-b", "c4", keyB},
		{"tool", "0.1.0", d3, "stable", "ci", "repo-c", "c5", keyA},
	}
	ids := map[string]int64{}
	for i, r := range rows {
		rec := &catalog.ArtifactRecord{
			Artifact: catalog.Artifact{Name: r.name, Version: r.version, Digest: r.digest, Size: 1, Channel: r.channel,
				BuilderID: "spiffe://t/builder/" + r.builder, SourceRepo: "https://git.example/" + r.repo, SourceCommit: r.commit, CreatedAt: created},
			Envelope: []byte(`{}`), KeyID: r.key,
			Entry: catalog.Entry{Leaf: fmt.Appendf(nil, "leaf-%s@%s", r.name, r.version)},
		}
		ids[r.name+"@"+r.version] = logged(t, s, rec, uint64(i))
	}
	pending := record("9.9.9", d1)
	if _, err := s.InsertArtifact(ctx, pending); err != nil {
		t.Fatal(err)
	}
	sig := signature(ids["app@2.0.0"], keyC, "resign-app-2")
	sid, err := s.InsertSignature(ctx, sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetLogged(ctx, catalog.Ref{Kind: catalog.KindSignature, ID: sid}, 100, nil, []byte("cp")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct{ artifact, env string }{
		{"app@1.0.0", "staging"}, {"app@1.0.0", "prod"}, {"app@1.1.0", "staging"}, {"lib@1.1.0", "prod"}, {"app@1.0.0", "prod"},
	} {
		if _, err := s.InsertDeployment(ctx, &catalog.Deployment{ArtifactID: ids[d.artifact], Environment: d.env,
			Actor: "spiffe://t/deployer/" + d.env, DeployedAt: created}); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func names(l []catalog.Listed) []string {
	var out []string
	for _, x := range l {
		out = append(out, x.Artifact.Name+"@"+x.Artifact.Version)
	}
	return out
}

func search(t *testing.T, open Opener) {
	s := open(t)
	ids := searchFixture(t, s)
	tests := []struct {
		name string
		q    catalog.Query
		want []string
	}{
		{"everything", catalog.Query{}, []string{"app@1.0.0", "app@1.1.0", "app@2.0.0", "lib@1.0.0", "lib@1.1.0", "tool@0.1.0"}},
		{"name", catalog.Query{Name: "app"}, []string{"app@1.0.0", "app@1.1.0", "app@2.0.0"}},
		{"name and version", catalog.Query{Name: "lib", Version: "1.1.0"}, []string{"lib@1.1.0"}},
		{"version alone", catalog.Query{Version: "1.0.0"}, []string{"app@1.0.0", "lib@1.0.0"}},
		{"digest", catalog.Query{Digest: d1}, []string{"app@1.0.0", "lib@1.0.0"}},
		{"builder", catalog.Query{BuilderID: "spiffe://t/builder/ci2"}, []string{"lib@1.0.0", "lib@1.1.0"}},
		{"source repo", catalog.Query{SourceRepo: "https://git.example/repo-c"}, []string{"tool@0.1.0"}},
		{"commit", catalog.Query{SourceCommit: "c1"}, []string{"app@1.0.0", "lib@1.0.0"}},
		{"channel", catalog.Query{Channel: "beta"}, []string{"app@2.0.0", "lib@1.1.0"}},
		{"key of the current envelope", catalog.Query{KeyID: keyA}, []string{"app@1.0.0", "lib@1.0.0", "tool@0.1.0"}},
		{"key of a re-signature", catalog.Query{KeyID: keyC}, []string{"app@2.0.0"}},
		{"deployed to prod", catalog.Query{Environment: "prod"}, []string{"app@1.0.0", "lib@1.1.0"}},
		{"deployed to staging", catalog.Query{Environment: "staging"}, []string{"app@1.0.0", "app@1.1.0"}},
		{"deployed nowhere known", catalog.Query{Environment: "dev"}, nil},
		{"all together", catalog.Query{Name: "app", Digest: d1, Channel: "stable", BuilderID: "spiffe://t/builder/ci",
			SourceRepo: "https://git.example/repo-a", SourceCommit: "c1", KeyID: keyA, Environment: "prod", Version: "1.0.0"}, []string{"app@1.0.0"}},
		{"filters are anded", catalog.Query{Name: "app", Channel: "beta", KeyID: keyB}, nil},
		{"prefixes do not match", catalog.Query{Name: "ap"}, nil},
		{"case matters", catalog.Query{Name: "APP"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := s.SearchArtifacts(t.Context(), tt.q, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, names(l)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	t.Run("pages", func(t *testing.T) {
		var got []string
		after := int64(0)
		for range 10 {
			l, err := s.SearchArtifacts(t.Context(), catalog.Query{Channel: "stable"}, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(l) > 2 {
				t.Fatalf("page of %d with limit 2", len(l))
			}
			if len(l) == 0 {
				break
			}
			got = append(got, names(l)...)
			after = l[len(l)-1].ID
		}
		if diff := cmp.Diff([]string{"app@1.0.0", "app@1.1.0", "lib@1.0.0", "tool@0.1.0"}, got); diff != "" {
			t.Errorf("paged (-want +got):\n%s", diff)
		}
	})
	t.Run("listed fields", func(t *testing.T) {
		l, err := s.SearchArtifacts(t.Context(), catalog.Query{Name: "app", Version: "2.0.0"}, 0, 10)
		if err != nil || len(l) != 1 {
			t.Fatalf("= %+v, %v", l, err)
		}
		// Re-signed: signed when its current re-signature was recorded.
		want := catalog.Listed{ID: ids["app@2.0.0"], KeyID: keyC, SignedAt: signature(0, "", "").CreatedAt,
			Artifact: catalog.Artifact{Name: "app", Version: "2.0.0", Digest: d3, Size: 1,
				Channel: "beta", BuilderID: "spiffe://t/builder/ci", SourceRepo: "https://git.example/repo-a", SourceCommit: "c3", CreatedAt: created}}
		if diff := cmp.Diff(want, l[0]); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		// Never re-signed: signed when it was recorded.
		l, err = s.SearchArtifacts(t.Context(), catalog.Query{Name: "app", Version: "1.0.0"}, 0, 10)
		if err != nil || len(l) != 1 || l[0].KeyID != keyA || !l[0].SignedAt.Equal(created) {
			t.Fatalf("app@1.0.0 = %+v, %v; want signed by %s at its created_at %v", l, err, keyA, created)
		}
	})
}

// searchHostile sends what a hostile caller would put in a filter: every
// value is a parameter, never SQL, so each matches nothing.
func searchHostile(t *testing.T, open Opener) {
	s := open(t)
	searchFixture(t, s)
	for _, v := range []string{
		`' OR '1'='1`, `app' --`, `app"; DROP TABLE artifacts; --`, `%`, `_`, `*`, `app%`, "app\x00", `\`, `$1`, `?`,
	} {
		for _, q := range []catalog.Query{{Name: v}, {Version: v}, {Digest: v}, {BuilderID: v}, {SourceRepo: v},
			{SourceCommit: v}, {Channel: v}, {KeyID: v}, {Environment: v}} {
			l, err := s.SearchArtifacts(t.Context(), q, 0, 100)
			if err != nil {
				// A back end may refuse bytes it cannot store (NUL in
				// PostgreSQL text); it must not match anything.
				continue
			}
			if len(l) != 0 {
				t.Errorf("SearchArtifacts(%+v) = %v, want nothing", q, names(l))
			}
		}
	}
	// The tables are intact.
	if l, err := s.SearchArtifacts(t.Context(), catalog.Query{}, 0, 100); err != nil || len(l) != 6 {
		t.Errorf("after hostile searches: %d artifacts, %v; want 6", len(l), err)
	}
}

func deployments(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	id := logged(t, s, record("1.0.0", d1), 0)
	d := &catalog.Deployment{ArtifactID: id, Environment: "prod", Actor: "spiffe://t/deployer/prod", DeployedAt: created}
	id1, err := s.InsertDeployment(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	// Deploying again is another deployment.
	id2, err := s.InsertDeployment(ctx, d)
	if err != nil || id2 <= id1 {
		t.Errorf("second deployment: id %d, %v; want above %d", id2, err, id1)
	}
	if _, err := s.InsertDeployment(ctx, &catalog.Deployment{ArtifactID: id + 1000, Environment: "prod", Actor: "a", DeployedAt: created}); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("deployment of a missing artifact: got %v, want ErrNotFound", err)
	}
	l, err := s.SearchArtifacts(ctx, catalog.Query{Environment: "prod"}, 0, 10)
	if err != nil || len(l) != 1 || l[0].ID != id {
		t.Errorf("deployed to prod: %+v, %v; want the artifact once", l, err)
	}
}

// bindOnce records the same name@version from two stores over one
// database at once, as two catalog processes would: exactly one insert
// wins, the others get ErrAlreadyExists, and the stored digest is the
// winner's.
func bindOnce(t *testing.T, open Opener) {
	a, b := open(t), open(t)
	const rounds, perStore = 20, 4
	for round := range rounds {
		version := fmt.Sprintf("3.0.%d", round)
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			won     []string
			refused int
			other   []error
		)
		for i := range 2 * perStore {
			s, digest := catalog.Store(a), d1
			if i%2 == 1 {
				s, digest = b, d2
			}
			wg.Go(func() {
				_, err := s.InsertArtifact(t.Context(), record(version, digest))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won = append(won, digest)
				case errors.Is(err, catalog.ErrAlreadyExists):
					refused++
				default:
					other = append(other, err)
				}
			})
		}
		wg.Wait()
		if len(other) > 0 || len(won) != 1 || refused != 2*perStore-1 {
			t.Fatalf("app@%s: %d inserts won (%v), %d refused, other errors %v; want 1 and %d", version, len(won), won, refused, other, 2*perStore-1)
		}
		for _, s := range []catalog.Store{a, b} {
			r, err := s.Artifact(t.Context(), "app", version)
			if err != nil || r.Artifact.Digest != won[0] {
				t.Fatalf("app@%s read back: %+v, %v; want digest %s", version, r, err, won[0])
			}
		}
	}
}

// sharedReadWrite has two stores over one database write different rows
// and read each other's at the same time.
func sharedReadWrite(t *testing.T, open Opener) {
	a, b := open(t), open(t)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, 4*n)
	for i := range n {
		for j, s := range []catalog.Store{a, b} {
			wg.Go(func() {
				r := record(fmt.Sprintf("%d.%d.0", j, i), d1)
				r.Entry.Leaf = fmt.Appendf(nil, "shared-%d-%d", j, i)
				id, err := s.InsertArtifact(t.Context(), r)
				if err == nil {
					err = s.SetLogged(t.Context(), catalog.Ref{Kind: catalog.KindArtifact, ID: id}, uint64(2*i+j), nil, []byte("cp"))
				}
				if err == nil {
					_, err = s.InsertEvent(t.Context(), &catalog.Event{Type: "x.y", Actor: "a", CreatedAt: time.Now(), Entry: catalog.Entry{Leaf: r.Entry.Leaf}})
				}
				if err != nil {
					errs <- fmt.Errorf("store %d write %d: %w", j, i, err)
					return
				}
				// The other store sees the row at once.
				other := []catalog.Store{b, a}[j]
				got, err := other.Artifact(t.Context(), "app", r.Artifact.Version)
				if err != nil || got.ID != id || !got.Entry.Logged() {
					errs <- fmt.Errorf("store %d reads %s of store %d: %+v, %v", 1-j, r.Artifact.Version, j, got, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, s := range []catalog.Store{a, b} {
		l, err := s.SearchArtifacts(t.Context(), catalog.Query{Name: "app"}, 0, 1000)
		if err != nil || len(l) != 2*n {
			t.Errorf("listing: %d artifacts, %v; want %d", len(l), err, 2*n)
		}
		if p, err := s.Pending(t.Context()); err != nil || len(p) != 2*n {
			t.Errorf("pending events: %d, %v; want %d", len(p), err, 2*n)
		}
	}
}
