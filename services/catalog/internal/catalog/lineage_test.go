package catalog_test

import (
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// envelopeWith is an envelope over a provenance statement about a that
// claims deps.
func envelopeWith(t *testing.T, a catalog.Artifact, deps ...attest.ResourceDescriptor) []byte {
	t.Helper()
	statement, err := attest.NewProvenance(attest.Artifact{Name: a.Name, Version: a.Version, Digest: a.Digest,
		Channel: a.Channel, BuilderID: a.BuilderID, Dependencies: deps})
	if err != nil {
		t.Fatal(err)
	}
	b, err := attest.SignEnvelope(attest.PayloadType, statement, "k", func([]byte) ([]byte, error) { return []byte("sig"), nil })
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func on(digest string) attest.ResourceDescriptor {
	return attest.ResourceDescriptor{URI: "custody:" + digest, Digest: map[string]string{"sha256": strings.TrimPrefix(digest, "sha256:")},
		Annotations: map[string]string{attest.AnnotationKind: attest.KindArtifact}}
}

func record(t *testing.T, c *catalog.Catalog, version, content string, deps ...attest.ResourceDescriptor) catalog.Artifact {
	t.Helper()
	a := artifact(version, content)
	if _, _, err := c.RecordArtifact(t.Context(), publisher, a, envelopeWith(t, a, deps...)); err != nil {
		t.Fatal(err)
	}
	return a
}

// The edges of recorded provenance are walked up and down, a cycle that a
// builder claims ends the walk, depth is bounded, and a path is found
// either way.
func TestLineage(t *testing.T) {
	f := newFixture(t)
	c := f.catalog(nil, nil)
	base := record(t, c, "base", "base")
	lib := record(t, c, "lib", "lib", on(base.Digest))
	app := record(t, c, "app", "app", on(lib.Digest), attest.ResourceDescriptor{URI: "https://ci.example/env", Annotations: map[string]string{"kind": "build-env"}})

	up, err := c.Lineage(t.Context(), app.Digest, catalog.Up, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range up.Edges {
		got = append(got, fmt.Sprintf("%d %s@%s->%s", e.Depth, e.Artifact.Name, e.Artifact.Version, e.Dependency.Key[:10]))
	}
	want := []string{"1 app@app->sha256:" + lib.Digest[7:10], "1 app@app->uri:https:", "2 app@lib->sha256:" + base.Digest[7:10]}
	slices.Sort(got)
	slices.Sort(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("ancestors: %v, want %v", got, want)
	}
	if len(up.Artifacts) != 3 || up.Truncated {
		t.Errorf("ancestors' artifacts %+v, truncated %v", up.Artifacts, up.Truncated)
	}
	one, _ := c.Lineage(t.Context(), app.Digest, catalog.Up, 1)
	if len(one.Edges) != 2 || !one.Truncated {
		t.Errorf("depth 1: %d edges, truncated %v; want 2, true", len(one.Edges), one.Truncated)
	}
	down, err := c.Lineage(t.Context(), base.Digest, catalog.Down, 0)
	if err != nil || len(down.Edges) != 2 || down.Edges[0].Artifact.Version != "lib" || down.Edges[1].Artifact.Version != "app" {
		t.Fatalf("descendants of base: %+v, %v", down, err)
	}

	path, isDown, err := c.LineagePath(t.Context(), base.Digest, app.Digest, 0)
	if err != nil || !isDown || len(path) != 2 || path[0].Artifact.Digest != lib.Digest || path[1].Artifact.Digest != app.Digest {
		t.Errorf("path base → app: %+v down=%v, %v", path, isDown, err)
	}
	path, isDown, err = c.LineagePath(t.Context(), app.Digest, base.Digest, 0)
	if err != nil || isDown || len(path) != 2 || path[0].Artifact.Digest != app.Digest || path[1].Dependency.Key != base.Digest {
		t.Errorf("path app → base: %+v down=%v, %v", path, isDown, err)
	}
	if path, _, err := c.LineagePath(t.Context(), app.Digest, "uri:https://elsewhere", 0); err != nil || len(path) != 0 {
		t.Errorf("no path: %+v, %v", path, err)
	}

	// A hostile builder claims x built from y and y from x.
	x, y := artifact("x", "x"), artifact("y", "y")
	if _, _, err := c.RecordArtifact(t.Context(), publisher, x, envelopeWith(t, x, on(y.Digest))); err != nil {
		t.Fatal(err)
	}
	record(t, c, "y", "y", on(x.Digest))
	cyc, err := c.Lineage(t.Context(), x.Digest, catalog.Up, 0)
	if err != nil || len(cyc.Edges) != 2 || cyc.Edges[0].Depth != 1 || cyc.Edges[1].Depth != 2 {
		t.Fatalf("cycle: %+v, %v", cyc, err)
	}
	if p, _, err := c.LineagePath(t.Context(), x.Digest, y.Digest, 0); err != nil || len(p) != 1 {
		t.Errorf("path in a cycle: %+v, %v", p, err)
	}
}

func TestLineageRefusesBadInput(t *testing.T) {
	f := newFixture(t)
	c := f.catalog(nil, nil)
	good := "sha256:" + strings.Repeat("a", 64)
	for name, call := range map[string]func() error{
		"empty node":  func() error { _, err := c.Lineage(t.Context(), "", catalog.Up, 0); return err },
		"bad digest":  func() error { _, err := c.Lineage(t.Context(), "sha256:ABC", catalog.Up, 0); return err },
		"sql in node": func() error { _, err := c.Lineage(t.Context(), "sha256:' OR 1=1 --", catalog.Down, 0); return err },
		"long uri": func() error {
			_, err := c.Lineage(t.Context(), "uri:"+strings.Repeat("u", 5000), catalog.Down, 0)
			return err
		},
		"no direction":   func() error { _, err := c.Lineage(t.Context(), good, 0, 0); return err },
		"negative depth": func() error { _, err := c.Lineage(t.Context(), good, catalog.Up, -1); return err },
		"bad path from":  func() error { _, _, err := c.LineagePath(t.Context(), "x", good, 0); return err },
		"bad path to":    func() error { _, _, err := c.LineagePath(t.Context(), good, "uri:\n", 0); return err },
	} {
		if err := call(); !errors.Is(err, catalog.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		} else if len(err.Error()) > 400 {
			t.Errorf("%s: error of %d bytes echoes the input", name, len(err.Error()))
		}
	}
}

// ListEvents returns publications, re-signatures and events about a digest
// in log order, each proven against the latest checkpoint, page by page.
func TestListEvents(t *testing.T) {
	f := newFixture(t)
	c := catalog.New(catalog.Config{Store: f.store, Log: f.log, VerifierKey: f.vkey, TrustDomain: td, Prover: f.log})
	a := record(t, c, "1.0.0", "bytes")
	record(t, c, "other", "other bytes")
	for i := range 5 {
		if _, err := c.AppendEvent(t.Context(), gatekeeper, "admission.decided", a.Digest, fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	record(t, c, "1.0.1", "bytes") // same bytes, another version
	var (
		all   []catalog.Entry
		token string
		pages int
	)
	for {
		page, next, err := c.ListEvents(t.Context(), a.Digest, 3, token)
		if err != nil {
			t.Fatal(err)
		}
		all, token, pages = append(all, page...), next, pages+1
		if token == "" {
			break
		}
	}
	if len(all) != 7 || pages != 3 {
		t.Fatalf("%d entries in %d pages, want 7 in 3", len(all), pages)
	}
	_, latest, _ := f.log.Checkpoint(t.Context())
	var types []string
	for i, e := range all {
		if i > 0 && e.Index <= all[i-1].Index {
			t.Errorf("entry %d at index %d after %d: not in log order", i, e.Index, all[i-1].Index)
		}
		cp, err := tlog.OpenCheckpoint(e.Checkpoint, f.vkey)
		if err != nil {
			t.Fatal(err)
		}
		if cp.Size != latest.Size {
			t.Errorf("entry %d proven against size %d, want the latest %d", e.Index, cp.Size, latest.Size)
		}
		if err := tlog.VerifyInclusion(e.Leaf, e.Index, e.Proof, cp); err != nil {
			t.Errorf("entry %d: %v", e.Index, err)
		}
		le, _ := tlog.ParseEntry(e.Leaf)
		types = append(types, le.Type)
		if le.Subject.Digest != a.Digest {
			t.Errorf("entry %d is about %s", e.Index, le.Subject.Digest)
		}
	}
	if types[0] != tlog.TypeArtifactPublished || types[6] != tlog.TypeArtifactPublished || types[3] != "admission.decided" {
		t.Errorf("types %v", types)
	}

	// Without a prover, stored proofs are served, and verify too.
	plain := f.catalog(nil, nil)
	stored, _, err := plain.ListEvents(t.Context(), a.Digest, 0, "")
	if err != nil || len(stored) != 7 {
		t.Fatalf("stored proofs: %d, %v", len(stored), err)
	}

	for name, tc := range map[string]struct {
		digest, token string
		size          int
	}{
		"bad digest":     {"sha256:xyz", "", 0},
		"no digest":      {"", "", 0},
		"negative size":  {a.Digest, "", -1},
		"forged token":   {a.Digest, "AAAA", 0},
		"long token":     {a.Digest, strings.Repeat("A", 100), 0},
		"sql in token":   {a.Digest, "1; DROP TABLE events", 0},
		"sql in digest:": {"sha256:' UNION SELECT * FROM artifacts --", "", 0},
	} {
		if _, _, err := c.ListEvents(t.Context(), tc.digest, tc.size, tc.token); !errors.Is(err, catalog.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if none, next, err := c.ListEvents(t.Context(), "sha256:"+strings.Repeat("0", 64), 0, ""); err != nil || len(none) != 0 || next != "" {
		t.Errorf("unknown digest: %v %q %v", none, next, err)
	}
}

// A database row altered after logging is refused, not served.
func TestListEventsRefusesTamperedRows(t *testing.T) {
	f := newFixture(t)
	c := f.catalog(nil, nil)
	a := record(t, c, "1.0.0", "bytes")
	e, err := c.AppendEvent(t.Context(), gatekeeper, "admission.decided", a.Digest, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+f.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if res, err := db.ExecContext(t.Context(), `UPDATE events SET proof = zeroblob(32) WHERE log_index = ?`, int64(e.Entry.Index)); err != nil {
		t.Fatal(err)
	} else if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("tampered with %d rows, want 1", n)
	}
	if _, _, err := c.ListEvents(t.Context(), a.Digest, 0, ""); !errors.Is(err, catalog.ErrIntegrity) {
		t.Errorf("tampered proof: %v, want ErrIntegrity", err)
	}
}
