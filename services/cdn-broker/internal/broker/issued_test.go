package broker_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	"github.com/custody-dev/custody/libs/stopstate"
	"github.com/custody-dev/custody/services/cdn-broker/internal/broker"
	"github.com/custody-dev/custody/services/cdn-broker/internal/cdns"
	"github.com/custody-dev/custody/services/cdn-broker/internal/issued"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purges"
)

// fakeVendor is a commercial CDN's purge API: it records what it was asked.
type fakeVendor struct {
	mu    sync.Mutex
	calls []string // digest + " " + reference
}

func (v *fakeVendor) Purge(_ context.Context, d, ref string) (string, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls = append(v.calls, d+" "+ref)
	return "req-1", nil
}

func (v *fakeVendor) got() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.calls)
}

// edgeTarget is an own edge that records its purges.
type edgeTarget struct{ fakeVendor }

func (e *edgeTarget) Name() string { return "edge:a" }
func (e *edgeTarget) Purge(ctx context.Context, d, ref string) error {
	_, err := e.fakeVendor.Purge(ctx, d, ref)
	return err
}

// cloudCDN is one configured Cloud CDN to sign for.
func cloudCDN(t *testing.T) []*cdns.CDN {
	t.Helper()
	dir := t.TempDir()
	key := make([]byte, 16)
	rand.Read(key)
	kf := filepath.Join(dir, "g.key")
	if err := os.WriteFile(kf, []byte(base64.URLEncoding.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "cdns.json")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`{"cdns": [{"name": "gcdn", "kind": "cloud-cdn", "base_url": "https://g.example", "key": {"name": "g1", "file": %q}}]}`, kf)), 0o600); err != nil {
		t.Fatal(err)
	}
	list, err := cdns.Load(t.Context(), cfg, 5*time.Minute, time.Unix(1_800_000_000, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// killFixture is a broker with a Cloud CDN, the real purge queue (an own
// edge and the CDN as targets) and the issued-digests record.
type killFixture struct {
	*fixture
	queue        *purges.Manager
	record       *issued.Record
	path         string
	cdn          *fakeVendor
	edge         *edgeTarget
	reg          *prometheus.Registry
	retention    time.Duration
	max, maxJobs int
	noCDNPurging bool
}

func startKill(t *testing.T, k *killFixture) *killFixture {
	t.Helper()
	if k.path == "" {
		k.path = filepath.Join(t.TempDir(), "issued-digests.json")
	}
	k.cdn, k.edge, k.reg = &fakeVendor{}, &edgeTarget{}, prometheus.NewRegistry()
	k.fixture = startWith(t, nil, func(f *fixture, cfg *broker.Config) {
		targets := []purges.Target{k.edge}
		if !k.noCDNPurging {
			targets = append(targets, purges.NewCDN("gcdn", k.cdn))
		}
		q, err := purges.Open(purges.Config{Dir: t.TempDir(), Targets: targets, Log: nopLog{}, Now: func() time.Time { return f.now }, MaxJobs: k.maxJobs})
		if err != nil {
			t.Fatal(err)
		}
		r, err := issued.Open(issued.Config{Path: k.path, Retention: k.retention, Max: k.max, Now: func() time.Time { return f.now }, Registerer: k.reg})
		if err != nil {
			t.Fatal(err)
		}
		k.queue, k.record = q, r
		cfg.Purges, cfg.Issued = q, r
	}, cloudCDN(t)...)
	return k
}

// issue has a deployer fetch URLs for an admitted digest (never deployed).
func (k *killFixture) issue(t *testing.T, d string) *cdnbrokerv1.IssueDownloadUrlResponse {
	t.Helper()
	resp, err := k.client(t, "/deployer/pipeline").IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{
		DecisionEnvelope: k.decision.sign(t, k.vsa(t, func(x *attest.Decision) { x.Digest = d }))})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetCdnUrls()) != 1 {
		t.Fatalf("no CDN URL: %v", resp)
	}
	return resp
}

// advance moves the clock and has the broker learn the stop state again.
func (k *killFixture) advance(t *testing.T, d time.Duration) {
	t.Helper()
	k.now = k.now.Add(d)
	if err := k.stops.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// killSwitch is the gatekeeper's kill-switch purge of its deployed digests.
func (k *killFixture) killSwitch(t *testing.T, ref string, deployed ...string) error {
	t.Helper()
	_, err := k.client(t, "/service/gatekeeper").PurgeDigests(t.Context(), &cdnbrokerv1.PurgeDigestsRequest{Digests: deployed, Reason: "kill-switch", Reference: ref})
	return err
}

// jobs returns the queue's jobs of ref as digest → target names.
func (k *killFixture) jobs(ref string) map[string][]string {
	out := map[string][]string{}
	for _, j := range k.queue.Status() {
		if j.Reference != ref {
			continue
		}
		for _, ts := range j.Targets {
			out[j.Digest] = append(out[j.Digest], ts.Name)
		}
		slices.Sort(out[j.Digest])
	}
	return out
}

func hexDigest(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

var (
	admitted = hexDigest('a') // URLs issued, never deployed
	deployed = hexDigest('d')
)

// TestKillSwitchPurgesIssuedDigests: a digest a deployer fetched CDN URLs
// for after an admission alone, never deployed, is added to the kill
// switch's purge of the deployed digests under the same reference, on the
// commercial CDN only (edges drop their caches themselves); the CDN is
// asked for it; a retried batch queues nothing more; a deployed digest
// that was also issued gets both targets; a restarted broker (the file
// reopened) still purges it on the next kill switch.
func TestKillSwitchPurgesIssuedDigests(t *testing.T) {
	k := startKill(t, &killFixture{})
	k.issue(t, admitted)
	if n := metric(t, k.reg, "custody_broker_issued_digests"); n != 1 {
		t.Fatalf("gauge %v, want 1", n)
	}
	if err := k.killSwitch(t, "kill-switch-1", deployed); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{deployed: {"cdn:gcdn", "edge:a"}, admitted: {"cdn:gcdn"}}
	if diff := cmp.Diff(want, k.jobs("kill-switch-1")); diff != "" {
		t.Fatalf("jobs (-want +got):\n%s", diff)
	}
	if err := k.killSwitch(t, "kill-switch-1", deployed); err != nil { // the gatekeeper asking again
		t.Fatal(err)
	}
	if got := len(k.queue.Status()); got != 2 {
		t.Fatalf("%d jobs after a retry, want 2", got)
	}
	k.queue.Step(t.Context())
	if diff := cmp.Diff([]string{admitted + " kill-switch-1", deployed + " kill-switch-1"}, sorted(k.cdn.got())); diff != "" {
		t.Fatalf("CDN purges (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{deployed + " kill-switch-1"}, k.edge.got()); diff != "" {
		t.Fatalf("edge purges (-want +got):\n%s", diff)
	}

	// A digest both deployed and issued: the gatekeeper's batch adds the
	// edge to the CDN-only job, under the same job.
	both := hexDigest('b')
	k.issue(t, both)
	if err := k.killSwitch(t, "kill-switch-2", deployed); err != nil {
		t.Fatal(err)
	}
	if err := k.killSwitch(t, "kill-switch-2", both); err != nil { // its second batch
		t.Fatal(err)
	}
	want = map[string][]string{deployed: {"cdn:gcdn", "edge:a"}, admitted: {"cdn:gcdn"}, both: {"cdn:gcdn", "edge:a"}}
	if diff := cmp.Diff(want, k.jobs("kill-switch-2")); diff != "" {
		t.Fatalf("jobs (-want +got):\n%s", diff)
	}

	// Restart: a new broker on the same file.
	k2 := startKill(t, &killFixture{path: k.path})
	if err := k2.killSwitch(t, "kill-switch-3", deployed); err != nil {
		t.Fatal(err)
	}
	want = map[string][]string{deployed: {"cdn:gcdn", "edge:a"}, admitted: {"cdn:gcdn"}, both: {"cdn:gcdn"}}
	if diff := cmp.Diff(want, k2.jobs("kill-switch-3")); diff != "" {
		t.Fatalf("jobs after a restart (-want +got):\n%s", diff)
	}

	// Other reasons do not add the issued digests.
	if _, err := k2.client(t, "/admin/ops").PurgeDigests(t.Context(), &cdnbrokerv1.PurgeDigestsRequest{Digests: []string{deployed}, Reason: "admin", Reference: "adm-1"}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string][]string{deployed: {"cdn:gcdn", "edge:a"}}, k2.jobs("adm-1")); diff != "" {
		t.Fatalf("admin purge jobs (-want +got):\n%s", diff)
	}
}

func sorted(s []string) []string { slices.Sort(s); return s }

// TestKillSwitchSeenByTheBrokerPurgesIssuedDigests: with no deployed
// digest the gatekeeper has nothing to send, but the broker's own
// stop-state watcher sees the kill switch and queues the digests it
// issued CDN URLs for under the gatekeeper's reference; a gatekeeper call
// for the same kill switch afterwards queues nothing twice.
func TestKillSwitchSeenByTheBrokerPurgesIssuedDigests(t *testing.T) {
	k := startKill(t, &killFixture{})
	k.issue(t, admitted)
	ref := stopstate.KillSwitchPurgeReference(4)
	if ref != "kill-switch-4" {
		t.Fatalf("reference %q: the gatekeeper's format is kill-switch-<epoch>", ref)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	k.brk.PurgeIssuedOnKillSwitch(ctx, 4, k.td.ID("/service/cdn-broker").String())
	if diff := cmp.Diff(map[string][]string{admitted: {"cdn:gcdn"}}, k.jobs(ref)); diff != "" {
		t.Fatalf("jobs (-want +got):\n%s", diff)
	}
	if err := k.killSwitch(t, ref, deployed); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string][]string{admitted: {"cdn:gcdn"}, deployed: {"cdn:gcdn", "edge:a"}}, k.jobs(ref)); diff != "" {
		t.Fatalf("jobs after the gatekeeper's call (-want +got):\n%s", diff)
	}
	k.queue.Step(t.Context())
	if diff := cmp.Diff([]string{admitted + " " + ref, deployed + " " + ref}, sorted(k.cdn.got())); diff != "" {
		t.Fatalf("CDN purges (-want +got):\n%s", diff)
	}
	// Without a CDN purge target it returns at once (the expansion is
	// logged as impossible), not after retries.
	k2 := startKill(t, &killFixture{noCDNPurging: true})
	k2.issue(t, admitted)
	start := time.Now()
	k2.brk.PurgeIssuedOnKillSwitch(t.Context(), 5, k2.td.ID("/service/cdn-broker").String())
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("without a CDN target it took %s, want no retry", d)
	}
}

// TestKillSwitchSkipsDigestsPastRetention: a digest last issued longer ago
// than the retention is not purged.
func TestKillSwitchSkipsDigestsPastRetention(t *testing.T) {
	k := startKill(t, &killFixture{retention: 24 * time.Hour})
	k.issue(t, admitted)
	k.advance(t, 24*time.Hour+time.Second)
	recent := hexDigest('c')
	k.issue(t, recent)
	if err := k.killSwitch(t, "kill-switch-1", deployed); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{deployed: {"cdn:gcdn", "edge:a"}, recent: {"cdn:gcdn"}}
	if diff := cmp.Diff(want, k.jobs("kill-switch-1")); diff != "" {
		t.Fatalf("jobs (-want +got):\n%s", diff)
	}
}

// TestIssuedBoundDropsTheOldest: at --issued-digests-max the oldest digest
// is dropped, counted, and not purged.
func TestIssuedBoundDropsTheOldest(t *testing.T) {
	k := startKill(t, &killFixture{max: 2})
	var ds []string
	for _, c := range "123" {
		d := hexDigest(byte(c))
		ds = append(ds, d)
		k.issue(t, d)
		k.advance(t, time.Second)
	}
	if n := metric(t, k.reg, "custody_broker_issued_digests_dropped_total"); n != 1 {
		t.Fatalf("dropped %v, want 1", n)
	}
	if err := k.killSwitch(t, "kill-switch-1", deployed); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{deployed: {"cdn:gcdn", "edge:a"}, ds[1]: {"cdn:gcdn"}, ds[2]: {"cdn:gcdn"}}
	if diff := cmp.Diff(want, k.jobs("kill-switch-1")); diff != "" {
		t.Fatalf("jobs (-want +got):\n%s", diff)
	}
}

// TestIssueFailsClosedWhenTheRecordCannotBeWritten: a digest that cannot
// be recorded gets no URL (Unavailable naming the file) and no issuance
// is logged.
func TestIssueFailsClosedWhenTheRecordCannotBeWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "issued-digests.json")
	k := startKill(t, &killFixture{path: path})
	resp, err := k.client(t, "/deployer/pipeline").IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{
		DecisionEnvelope: k.decision.sign(t, k.vsa(t, func(x *attest.Decision) { x.Digest = admitted }))})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), path) || resp != nil {
		t.Fatalf("IssueDownloadUrl = %v, %v; want Unavailable naming %s and no URL", resp, err, path)
	}
	k.events.mu.Lock()
	defer k.events.mu.Unlock()
	if len(k.events.events) != 0 {
		t.Fatalf("events logged for a refused issuance: %v", k.events.events)
	}
	if got := k.record.Digests(); len(got) != 0 {
		t.Fatalf("recorded %v", got)
	}
}

// TestIssuedFileHoldsNoSecrets: the file holds digests and times only,
// never a token, a signature or a URL.
func TestIssuedFileHoldsNoSecrets(t *testing.T) {
	k := startKill(t, &killFixture{})
	resp := k.issue(t, admitted)
	k.advance(t, time.Minute)
	k.issue(t, admitted)
	if err := k.record.Flush(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(k.path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Version int                 `json:"version"`
		Digests []map[string]string `json:"digests"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	want := []map[string]string{{"digest": admitted, "last_issued": k.now.UTC().Format(time.RFC3339)}}
	if diff := cmp.Diff(want, f.Digests); diff != "" {
		t.Fatalf("file %s (-want +got):\n%s", b, diff)
	}
	secrets := []string{"https://", "Signature", "token"}
	for _, u := range append(resp.GetUrls(), resp.GetCdnUrls()[0].GetUrl()) {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, u, pu.Host)
		for _, vs := range pu.Query() {
			if len(vs[0]) >= 16 { // the edge token, the Cloud CDN signature
				secrets = append(secrets, vs[0])
			}
		}
	}
	if len(secrets) < 8 {
		t.Fatalf("found too few values to look for: %q", secrets)
	}
	for _, s := range secrets {
		if strings.Contains(string(b), s) {
			t.Fatalf("the file holds %q: %s", s, b)
		}
	}
}

// TestDamagedIssuedFileRefusesToStart: a record that does not parse stops
// the broker with a message naming the file and what to do.
func TestDamagedIssuedFileRefusesToStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "issued-digests.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"digests":[{"digest":"`+admitted+`","last_issued":"2027-01-01T00:00:00Z"},`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := issued.Open(issued.Config{Path: path})
	if err == nil || !strings.Contains(err.Error(), "issued-digests file "+path+" is damaged") || !strings.Contains(err.Error(), "purge the commercial CDNs by hand") {
		t.Fatalf("Open = %v", err)
	}
}

// TestKillSwitchWithoutCDNPurgeTarget: with CDNs signed for but none
// purgeable, the kill switch still queues the deployed digests and adds
// no job without a target (the broker logs that the CDNs need a purge by
// hand).
func TestKillSwitchWithoutCDNPurgeTarget(t *testing.T) {
	k := startKill(t, &killFixture{noCDNPurging: true})
	k.issue(t, admitted)
	if err := k.killSwitch(t, "kill-switch-1", deployed); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string][]string{deployed: {"edge:a"}}, k.jobs("kill-switch-1")); diff != "" {
		t.Fatalf("jobs (-want +got):\n%s", diff)
	}
}

// TestKillSwitchExpansionResumesWhenTheQueueIsFull: a queue too full for
// every issued digest makes the gatekeeper's call ResourceExhausted, so it
// asks again; once jobs finished, the rest is queued, and the CDN is asked
// for each issued digest once.
func TestKillSwitchExpansionResumesWhenTheQueueIsFull(t *testing.T) {
	k := startKill(t, &killFixture{maxJobs: 150})
	var ds []string
	for i := range 150 {
		d := fmt.Sprintf("sha256:%064x", i+1)
		ds = append(ds, d)
		if err := k.record.Note(t.Context(), d); err != nil {
			t.Fatal(err)
		}
	}
	err := k.killSwitch(t, "kill-switch-1", deployed)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "100 of 150") {
		t.Fatalf("first call = %v, want ResourceExhausted after 100 of 150", err)
	}
	drain := func() {
		for range 10 {
			k.queue.Step(t.Context())
		}
		for _, j := range k.queue.Status() {
			if !j.Done {
				t.Fatalf("job %+v not done", j)
			}
		}
	}
	drain()
	if err := k.killSwitch(t, "kill-switch-1", deployed); err != nil {
		t.Fatal(err)
	}
	if err := k.killSwitch(t, "kill-switch-1", deployed); err != nil { // and again: nothing more
		t.Fatal(err)
	}
	drain()
	asked := map[string]int{}
	for _, c := range k.cdn.got() {
		asked[strings.TrimSuffix(c, " kill-switch-1")]++
	}
	for _, d := range ds {
		if asked[d] != 1 {
			t.Fatalf("the CDN was asked %d times for %s, want once", asked[d], d)
		}
	}
}

// metric returns the value of the gauge or counter called name in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
