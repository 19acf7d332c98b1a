package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/publisher/internal/bindings"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/local"
	"github.com/custody-dev/custody/services/publisher/internal/kek/soft"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

// catalog answers the questions retention asks from what a test put in it,
// with pages of two so paging is exercised, and can be down per method.
type catalog struct {
	mu          sync.Mutex
	artifacts   []*catalogv1.Artifact
	events      []tlog.Entry
	deployments map[string]string // digest → environment
	down        map[string]bool   // method → Unavailable
	appended    []*catalogv1.AppendEventRequest
}

func (c *catalog) fail(m string) error {
	if c.down[m] {
		return status.Error(codes.Unavailable, "catalog down")
	}
	return nil
}

func page[T any](all []T, token string) ([]T, string) {
	var start int
	fmt.Sscan(token, &start)
	end := min(start+2, len(all))
	next := ""
	if end < len(all) {
		next = fmt.Sprint(end)
	}
	return all[start:end], next
}

func (c *catalog) SearchArtifacts(_ context.Context, in *catalogv1.SearchArtifactsRequest, _ ...grpc.CallOption) (*catalogv1.SearchArtifactsResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.fail("SearchArtifacts"); err != nil {
		return nil, err
	}
	var all []*catalogv1.ListedArtifact
	for _, a := range c.artifacts {
		if a.GetChannel() == in.GetChannel() {
			all = append(all, &catalogv1.ListedArtifact{Artifact: a})
		}
	}
	p, next := page(all, in.GetPageToken())
	return &catalogv1.SearchArtifactsResponse{Artifacts: p, NextPageToken: next}, nil
}

func (c *catalog) ListEvents(_ context.Context, in *catalogv1.ListEventsRequest, _ ...grpc.CallOption) (*catalogv1.ListEventsResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.fail("ListEvents"); err != nil {
		return nil, err
	}
	var all []*catalogv1.LogEntry
	for i, e := range c.events {
		if e.Subject.Digest != in.GetSubjectDigest() {
			continue
		}
		leaf, err := e.Marshal()
		if err != nil {
			leaf = []byte(`{"type":"broken"`) // a malformed leaf, as a hostile catalog would send
		}
		all = append(all, &catalogv1.LogEntry{Index: int64(i), Leaf: leaf})
	}
	p, next := page(all, in.GetPageToken())
	return &catalogv1.ListEventsResponse{Entries: p, NextPageToken: next}, nil
}

func (c *catalog) GetLineage(_ context.Context, in *catalogv1.GetLineageRequest, _ ...grpc.CallOption) (*catalogv1.GetLineageResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.fail("GetLineage"); err != nil {
		return nil, err
	}
	resp := &catalogv1.GetLineageResponse{}
	if env, ok := c.deployments[in.GetNode()]; ok {
		resp.Deployments = append(resp.Deployments, &catalogv1.Deployment{Digest: in.GetNode(), Environment: env})
	}
	return resp, nil
}

func (c *catalog) AppendEvent(_ context.Context, in *catalogv1.AppendEventRequest, _ ...grpc.CallOption) (*catalogv1.AppendEventResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.fail("AppendEvent"); err != nil {
		return nil, err
	}
	c.appended = append(c.appended, in)
	return &catalogv1.AppendEventResponse{Entry: &catalogv1.LogEntry{Index: int64(len(c.appended))}}, nil
}

type fixture struct {
	dir   string
	blobs *sealed.Store
	binds *bindings.Store
	cat   *catalog
	now   time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	objects, err := local.New(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := soft.Open(filepath.Join(dir, "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	binds, err := bindings.Open(filepath.Join(dir, "bindings"))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, blobs: sealed.New(objects, k, slog.New(slog.DiscardHandler)), binds: binds,
		cat: &catalog{deployments: map[string]string{}, down: map[string]bool{}}, now: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)}
}

// publish stores content as name@version on channel, created age ago.
func (f *fixture) publish(t *testing.T, name, version, channel, content string, age time.Duration) string {
	t.Helper()
	d, size, err := f.blobs.Put(t.Context(), strings.NewReader(content), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.binds.Bind(bindings.Binding{Name: name, Version: version, Digest: d, Size: size}); err != nil {
		t.Fatal(err)
	}
	f.cat.artifacts = append(f.cat.artifacts, &catalogv1.Artifact{Name: name, Version: version, Digest: d, Size: size, Channel: channel,
		CreatedAt: timestamppb.New(f.now.Add(-age))})
	return d
}

func (f *fixture) runner(t *testing.T, policy string, opts ...func(*Config)) *Runner {
	t.Helper()
	var p *Policy
	if policy != "" {
		var err error
		if p, err = ParsePolicy([]byte(policy)); err != nil {
			t.Fatal(err)
		}
	}
	c := Config{Policy: p, Blobs: f.blobs, Bindings: f.binds, Catalog: f.cat, JournalDir: filepath.Join(f.dir, "retention"),
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return f.now }}
	for _, o := range opts {
		o(&c)
	}
	r, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *fixture) recordPath(digest string) string {
	h := strings.TrimPrefix(digest, "sha256:")
	return filepath.Join(f.dir, "blobs", "objects", "keys", "sha256", h[:2], h)
}

// stored reports whether digest's key record and ciphertext exist, and
// checks a readable blob decrypts to its digest.
func (f *fixture) stored(t *testing.T, digest string) bool {
	t.Helper()
	_, err := f.blobs.Verify(t.Context(), digest)
	switch {
	case err == nil:
		return true
	case errors.Is(err, sealed.ErrNotFound):
		return false
	}
	t.Fatalf("verify %s: %v", digest, err)
	return false
}

func (f *fixture) ciphertexts(t *testing.T) int {
	t.Helper()
	n := 0
	filepath.WalkDir(filepath.Join(f.dir, "blobs", "objects", "data"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func names(items []Item) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.Name+"@"+it.Version)
	}
	slices.Sort(out)
	return out
}

func TestKeepLastAndMaxAge(t *testing.T) {
	f := newFixture(t)
	day := 24 * time.Hour
	var app []string
	for i := range 5 {
		app = append(app, f.publish(t, "app", fmt.Sprintf("1.%d", i), "dev", fmt.Sprintf("app %d", i), time.Duration(5-i)*day))
	}
	old := f.publish(t, "tool", "1", "nightly", "tool 1", 40*day)
	recent := f.publish(t, "tool", "2", "nightly", "tool 2", 20*day)
	f.publish(t, "tool", "3", "nightly", "tool 3", 35*day) // created before tool 2: not the newest
	onlyOld := f.publish(t, "lonely", "1", "nightly", "lonely", 90*day)
	untouched := f.publish(t, "svc", "1", "prod", "svc 1", 400*day)
	f.publish(t, "svc", "2", "prod", "svc 2", 300*day)

	r := f.runner(t, `{"channels": {"dev": {"keep_last": 2}, "nightly": {"max_age": "720h"}}}`)
	res, err := r.Run(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	// dev keeps 1.4 and 1.3; nightly deletes tool 1 and tool 3 (older than
	// 30 days, not the newest of their name) and keeps lonely 1, the
	// newest of its name; prod is not in the policy.
	if got, want := names(res.Deleted), []string{"app@1.0", "app@1.1", "app@1.2", "tool@1", "tool@3"}; !slices.Equal(got, want) {
		t.Fatalf("deleted %v, want %v", got, want)
	}
	for i, d := range app {
		if want := i >= 3; f.stored(t, d) != want {
			t.Errorf("app 1.%d stored %v, want %v", i, !want, want)
		}
	}
	for d, want := range map[string]bool{old: false, recent: true, onlyOld: true, untouched: true} {
		if f.stored(t, d) != want {
			t.Errorf("%s stored %v, want %v", d, !want, want)
		}
	}
	if n := f.ciphertexts(t); n != 6 {
		t.Errorf("%d ciphertext objects left, want 6 (the kept blobs only)", n)
	}
	b, err := f.binds.Get("app", "1.0")
	if err != nil || b.Deleted == nil || b.Digest != app[0] {
		t.Fatalf("binding of a deleted version: %+v %v, want a tombstone keeping its digest", b, err)
	}
	if _, err := f.binds.Bind(bindings.Binding{Name: "app", Version: "1.0", Digest: app[4]}); !errors.Is(err, bindings.ErrDeleted) {
		t.Fatalf("rebinding a deleted name@version: %v, want ErrDeleted", err)
	}
	if len(f.cat.appended) != 5 {
		t.Fatalf("%d events, want 5", len(f.cat.appended))
	}
	for _, e := range f.cat.appended {
		var d details
		if e.GetType() != tlog.TypeArtifactRetentionDeleted || json.Unmarshal(e.GetDetails(), &d) != nil || !d.BlobDestroyed || d.Reason == "" || d.Channel == "" {
			t.Errorf("event %s %s", e.GetType(), e.GetDetails())
		}
	}
	// A second run finds nothing more to do and logs nothing.
	res, err = r.Run(t.Context(), false)
	if err != nil || len(res.Deleted) != 0 || len(f.cat.appended) != 5 {
		t.Fatalf("second run: %+v %v, %d events", res, err, len(f.cat.appended))
	}
	if ents, _ := os.ReadDir(filepath.Join(f.dir, "retention")); len(ents) != 0 {
		t.Errorf("journal not empty: %v", ents)
	}
}

func TestDeployedApprovedAndSharedAreKept(t *testing.T) {
	f := newFixture(t)
	hour := time.Hour
	deployedEvent := f.publish(t, "app", "1", "dev", "deployed by event", 6*hour)
	deployedTable := f.publish(t, "app", "2", "dev", "deployed in the table", 5*hour)
	rolledBack := f.publish(t, "app", "3", "dev", "rolled back to", 4*hour)
	approved := f.publish(t, "app", "4", "dev", "approved", 3*hour)
	shared := f.publish(t, "app", "5", "dev", "shared bytes", 2*hour)
	f.publish(t, "app", "6", "dev", "newest", hour)
	// The same bytes as app 5 bound under another name, on a channel the
	// policy does not name.
	if d := f.publish(t, "other", "1", "prod", "shared bytes", hour); d != shared {
		t.Fatal("content addressing broke")
	}
	f.cat.events = []tlog.Entry{
		{Type: "deployment.recorded", Time: f.now, Actor: "spiffe://custody.test/service/gatekeeper", Subject: tlog.Subject{Digest: deployedEvent}},
		{Type: "rollback.performed", Time: f.now, Actor: "spiffe://custody.test/service/gatekeeper", Subject: tlog.Subject{Digest: rolledBack}},
		{Type: "approval.signed", Time: f.now, Actor: "spiffe://custody.test/service/signer", Subject: tlog.Subject{Digest: approved}},
		{Type: "admission.decided", Time: f.now, Actor: "spiffe://custody.test/service/gatekeeper", Subject: tlog.Subject{Digest: shared}},
	}
	f.cat.deployments[deployedTable] = "staging"
	res, err := f.runner(t, `{"channels": {"dev": {"keep_last": 1}}}`).Run(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(res.Deleted); !slices.Equal(got, []string{"app@5"}) {
		t.Fatalf("deleted %v, want only app@5", got)
	}
	if res.Deleted[0].BlobDestroyed || !f.stored(t, shared) {
		t.Fatal("the blob that other@1 still binds was destroyed")
	}
	if got := names(res.Kept); !slices.Equal(got, []string{"app@1", "app@2", "app@3", "app@4"}) {
		t.Fatalf("kept %v", got)
	}
	for _, it := range res.Kept {
		if !strings.HasPrefix(it.Reason, "kept: ") {
			t.Errorf("%s@%s kept for %q", it.Name, it.Version, it.Reason)
		}
	}
	for _, d := range []string{deployedEvent, deployedTable, rolledBack, approved} {
		if !f.stored(t, d) {
			t.Errorf("%s was destroyed", d)
		}
	}
	var d details
	if len(f.cat.appended) != 1 || json.Unmarshal(f.cat.appended[0].GetDetails(), &d) != nil || d.BlobDestroyed {
		t.Fatalf("events %v", f.cat.appended)
	}
}

func TestDryRunDeletesNothing(t *testing.T) {
	f := newFixture(t)
	a := f.publish(t, "app", "1", "dev", "one", 2*time.Hour)
	f.publish(t, "app", "2", "dev", "two", time.Hour)
	res, err := f.runner(t, `{"channels": {"dev": {"keep_last": 1}}}`).Run(t.Context(), true)
	if err != nil || !res.DryRun || !slices.Equal(names(res.Deleted), []string{"app@1"}) {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	if b, _ := f.binds.Get("app", "1"); !f.stored(t, a) || b.Deleted != nil || len(f.cat.appended) != 0 {
		t.Fatal("a dry run deleted or logged")
	}
}

// TestCatalogDownDeletesNothing: every question retention asks, failing or
// answered with a malformed entry, leaves everything in place.
func TestCatalogDownDeletesNothing(t *testing.T) {
	for _, m := range []string{"SearchArtifacts", "ListEvents", "GetLineage", "malformed"} {
		t.Run(m, func(t *testing.T) {
			f := newFixture(t)
			var all []string
			for i := range 4 {
				all = append(all, f.publish(t, "app", fmt.Sprint(i), "dev", fmt.Sprint("v", i), time.Duration(5-i)*time.Hour))
			}
			if m == "malformed" {
				f.cat.events = []tlog.Entry{{Type: "Not A Type", Subject: tlog.Subject{Digest: all[1]}}}
			} else {
				f.cat.down[m] = true
			}
			_, err := f.runner(t, `{"channels": {"dev": {"keep_last": 1}}}`).Run(t.Context(), false)
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("run: %v, want ErrUnavailable", err)
			}
			for _, d := range all {
				if !f.stored(t, d) {
					t.Errorf("%s destroyed although the catalog could not be asked", d)
				}
			}
			if len(f.cat.appended) != 0 {
				t.Error("events logged")
			}
		})
	}
}

// TestCrashAfterKeyDestructionConverges: a deletion stopped after the key
// is destroyed (and after the ciphertext is deleted) is finished by the
// next start's Recover, before any upload can bind, and its event logged by
// the next run.
func TestCrashAfterKeyDestructionConverges(t *testing.T) {
	for _, step := range []string{"key", "ciphertext"} {
		t.Run(step, func(t *testing.T) {
			f := newFixture(t)
			old := f.publish(t, "app", "1", "dev", "old bytes", 2*time.Hour)
			f.publish(t, "app", "2", "dev", "new bytes", time.Hour)
			policy := `{"channels": {"dev": {"keep_last": 1}}}`
			r := f.runner(t, policy)
			r.crashAfter = step
			if _, err := r.Run(t.Context(), false); !errors.Is(err, errCrash) {
				t.Fatalf("run: %v, want the simulated crash", err)
			}
			if _, err := os.Stat(f.recordPath(old)); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("the key record survived the first step")
			}
			if b, _ := f.binds.Get("app", "1"); b.Deleted != nil {
				t.Fatal("the binding went before the ciphertext")
			}
			// Restart: the catalog is not up yet.
			f.cat.down["AppendEvent"] = true
			r2 := f.runner(t, policy)
			if err := r2.Recover(t.Context(), false); err != nil {
				t.Fatal(err)
			}
			if n := f.ciphertexts(t); n != 1 {
				t.Fatalf("%d ciphertext objects after recovery, want 1", n)
			}
			if b, _ := f.binds.Get("app", "1"); b.Deleted == nil {
				t.Fatal("binding not tombstoned by recovery")
			}
			// The event waits for the catalog: a run while it is down fails
			// closed, and logs once it is back.
			if _, err := r2.Run(t.Context(), false); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("run with the catalog down: %v", err)
			}
			f.cat.down["AppendEvent"] = false
			res, err := r2.Run(t.Context(), false)
			if err != nil || len(res.Deleted) != 0 {
				t.Fatalf("run after recovery: %+v %v", res, err)
			}
			if len(f.cat.appended) != 1 || f.cat.appended[0].GetSubjectDigest() != old {
				t.Fatalf("events %v, want one about %s", f.cat.appended, old)
			}
			if ents, _ := os.ReadDir(filepath.Join(f.dir, "retention")); len(ents) != 0 {
				t.Errorf("journal not empty: %v", ents)
			}
		})
	}
}

func TestBindStoredRefusesADestroyedBlob(t *testing.T) {
	f := newFixture(t)
	old := f.publish(t, "app", "1", "dev", "old bytes", 2*time.Hour)
	f.publish(t, "app", "2", "dev", "new bytes", time.Hour)
	r := f.runner(t, `{"channels": {"dev": {"keep_last": 1}}}`)
	if _, err := r.Run(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	called := false
	err := r.BindStored(t.Context(), old, func() error { called = true; return nil })
	if called || !errors.Is(err, sealed.ErrUnavailable) {
		t.Fatalf("bind of a destroyed blob: %v (bound %v)", err, called)
	}
}

func TestNoPolicyAndOneRunAtATime(t *testing.T) {
	f := newFixture(t)
	if _, err := f.runner(t, "").Run(t.Context(), false); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("no policy: %v", err)
	}
	r := f.runner(t, `{"channels": {"dev": {"keep_last": 1}}}`)
	r.run.Lock()
	_, err := r.Run(t.Context(), false)
	r.run.Unlock()
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("concurrent run: %v", err)
	}
}

func TestDamagedJournalStopsRecovery(t *testing.T) {
	f := newFixture(t)
	r := f.runner(t, `{"channels": {"dev": {"keep_last": 1}}}`)
	if err := os.WriteFile(filepath.Join(f.dir, "retention", journalName("sha256:"+strings.Repeat("a", 64))), []byte(`{"digest":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Recover(t.Context(), false); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("recover: %v", err)
	}
}

func TestParsePolicy(t *testing.T) {
	p, err := ParsePolicy([]byte(`{"channels": {"dev": {"keep_last": 3, "max_age": "48h"}}}`))
	if err != nil || p.Channels["dev"].KeepLast != 3 || p.Channels["dev"].MaxAge != 48*time.Hour {
		t.Fatalf("%+v %v", p, err)
	}
	for _, bad := range []string{
		``, `{}`, `{"channels": {}}`, `{"channels": {"dev": {}}}`, `{"channels": {"dev": null}}`,
		`{"channels": {"dev": {"keep_last": -1}}}`, `{"channels": {"dev": {"max_age": "-1h"}}}`,
		`{"channels": {"dev": {"max_age": "soon"}}}`, `{"channels": {"": {"keep_last": 1}}}`,
		`{"channels": {"a b": {"keep_last": 1}}}`, `{"channels": {"dev": {"keep_last": 1, "keep": 2}}}`,
		`{"channels": {"dev": {"keep_last": 1}}, "channels": {}}`, `{"channels": {"dev": {"keep_last": 1}}} x`,
		`{"channels": {"dev": {"keep_last": 1, "MaxAge": 5}}}`,
	} {
		if _, err := ParsePolicy([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", bad, err)
		}
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(`{"channels": {"dev": {"keep_last": 3, "max_age": "48h"}}}`))
	f.Add([]byte(`{"channels": {"dev": {"max_age": "1ns"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			return
		}
		for ch, r := range p.Channels {
			if ch == "" || r.KeepLast < 0 || r.MaxAge < 0 || (r.KeepLast == 0 && r.MaxAge == 0) {
				t.Fatalf("accepted %q: %+v", ch, r)
			}
		}
	})
}

func TestLoopRunsPeriodically(t *testing.T) {
	f := newFixture(t)
	old := f.publish(t, "app", "1", "dev", "old", 2*time.Hour)
	f.publish(t, "app", "2", "dev", "new", time.Hour)
	r := f.runner(t, `{"channels": {"dev": {"keep_last": 1}}}`)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Loop(ctx, 10*time.Millisecond) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.cat.mu.Lock()
		n := len(f.cat.appended)
		f.cat.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the loop deleted nothing")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f.stored(t, old) {
		t.Fatal("old version still stored")
	}
}

// purger records PurgeDigests calls and can be down, or refuse the next
// fail calls and then accept.
type purger struct {
	mu    sync.Mutex
	down  bool
	fail  int
	calls []*cdnbrokerv1.PurgeDigestsRequest
}

func (p *purger) PurgeDigests(_ context.Context, in *cdnbrokerv1.PurgeDigestsRequest, _ ...grpc.CallOption) (*cdnbrokerv1.PurgeDigestsResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, in)
	if p.down {
		return nil, status.Error(codes.Unavailable, "broker down")
	}
	if p.fail > 0 {
		p.fail--
		return nil, status.Error(codes.ResourceExhausted, "purge queue full")
	}
	return &cdnbrokerv1.PurgeDigestsResponse{}, nil
}

func (p *purger) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.calls)
}

// TestDestroyedBlobsArePurged: every destroyed blob is purged from the
// caches before its deletion is logged; a broker that is down keeps the
// journal, nothing is logged, and the next run purges under the same
// reference and logs each deletion once.
func TestDestroyedBlobsArePurged(t *testing.T) {
	f := newFixture(t)
	day := 24 * time.Hour
	gone := f.publish(t, "app", "1", "dev", "app 1", 3*day)
	f.publish(t, "app", "2", "dev", "app 2", 2*day)
	p := &purger{down: true}
	r := f.runner(t, `{"channels": {"dev": {"keep_last": 1}}}`)
	r.purger = p
	if _, err := r.Run(t.Context(), false); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("run with the broker down: %v, want ErrUnavailable", err)
	}
	if f.stored(t, gone) {
		t.Fatal("the blob is still stored: deletion comes before the purge")
	}
	if len(f.cat.appended) != 0 {
		t.Fatalf("%d events logged before the purge was accepted", len(f.cat.appended))
	}
	if ents, _ := os.ReadDir(filepath.Join(f.dir, "retention")); len(ents) == 0 {
		t.Fatal("journal removed although the purge failed")
	}
	p.down = false
	if _, err := r.Run(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if len(p.calls) != 2 {
		t.Fatalf("%d purge calls, want 2 (one failed, one retried)", len(p.calls))
	}
	first, again := p.calls[0], p.calls[1]
	if !slices.Equal(again.GetDigests(), []string{gone}) || again.GetReason() != PurgeReason || again.GetReference() != first.GetReference() || again.GetReference() == "" {
		t.Fatalf("purge requests %v then %v: want %s, reason %s, the same reference", first, again, gone, PurgeReason)
	}
	if len(f.cat.appended) != 1 || f.cat.appended[0].GetSubjectDigest() != gone {
		t.Fatalf("events %v, want one retention deletion of %s", f.cat.appended, gone)
	}
	if ents, _ := os.ReadDir(filepath.Join(f.dir, "retention")); len(ents) != 0 {
		t.Errorf("journal not empty: %v", ents)
	}
}
