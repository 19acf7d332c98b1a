package purges_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custody-dev/custody/services/cdn-broker/internal/purge/cloudfront"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purge/purgetest"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purges"
)

const (
	d1 = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	d2 = "sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
)

// flaky fails its first failures calls, then confirms; failures < 0 fails
// forever.
type flaky struct {
	name     string
	mu       sync.Mutex
	failures int
	calls    []string
}

func (f *flaky) Name() string { return f.name }
func (f *flaky) Purge(_ context.Context, d, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, d+" "+ref)
	if f.failures != 0 {
		f.failures--
		return errors.New("vendor API answered 503")
	}
	return nil
}

func (f *flaky) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// memLog is the catalog's log in memory; it can be down.
type memLog struct {
	mu     sync.Mutex
	down   bool
	events []string // "type digest details"
}

func (l *memLog) Append(_ context.Context, typ, d string, details []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return errors.New("catalog unavailable")
	}
	if !json.Valid(details) || details[0] != '{' {
		return fmt.Errorf("details %s are not a JSON object", details)
	}
	l.events = append(l.events, typ+" "+d+" "+string(details))
	return nil
}

func (l *memLog) types() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		out = append(out, strings.SplitN(e, " ", 2)[0])
	}
	return out
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

type fixture struct {
	dir   string
	clock *clock
	log   *memLog
	reg   *prometheus.Registry
}

func newFixture(t *testing.T) *fixture {
	return &fixture{dir: t.TempDir(), clock: &clock{t: time.Unix(1_800_000_000, 0).UTC()}, log: &memLog{}}
}

func (f *fixture) open(t *testing.T, targets ...purges.Target) *purges.Manager {
	t.Helper()
	f.reg = prometheus.NewRegistry()
	m, err := purges.Open(purges.Config{Dir: f.dir, Targets: targets, Log: f.log, Registerer: f.reg, Now: f.clock.now,
		Jitter: func() float64 { return 0.5 }, MinBackoff: time.Second, MaxBackoff: time.Minute, AlertAfter: 3})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (f *fixture) gauge(t *testing.T, name, target string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if target == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == target) {
				if m.GetGauge() != nil {
					return m.GetGauge().GetValue()
				}
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestRetriesWithBackoffUntilConfirmed: a target that fails three times is
// tried again after 1s, 2s and 4s (jitter factor 1) and then confirmed; the
// job finishes once both targets confirmed, and the log has every step.
func TestRetriesWithBackoffUntilConfirmed(t *testing.T) {
	f := newFixture(t)
	edge, cdn := &flaky{name: "edge:a"}, &flaky{name: "cdn:cf", failures: 3}
	m := f.open(t, edge, cdn)
	jobs, err := m.Enqueue(t.Context(), "spiffe://custody.test/admin/alice", "admin", "ticket-1", []string{d1})
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 || jobs[0].Done || len(jobs[0].Targets) != 2 {
		t.Fatalf("jobs %+v", jobs)
	}
	m.Step(t.Context())
	if edge.count() != 1 || cdn.count() != 1 {
		t.Fatalf("first step: edge %d calls, cdn %d", edge.count(), cdn.count())
	}
	for i, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		f.clock.advance(wait - time.Millisecond)
		m.Step(t.Context())
		if cdn.count() != i+1 {
			t.Fatalf("attempt %d came before its backoff of %s", i+2, wait)
		}
		f.clock.advance(time.Millisecond)
		m.Step(t.Context())
		if cdn.count() != i+2 {
			t.Fatalf("attempt %d not made after %s (%d calls)", i+2, wait, cdn.count())
		}
	}
	st := m.Status()
	if len(st) != 1 || !st[0].Done || st[0].Targets[1].Attempts != 4 || !st[0].Targets[1].Confirmed || st[0].Targets[1].LastError != "" {
		t.Fatalf("status %+v", st)
	}
	want := []string{"purge.requested", "purge.confirmed", "purge.failed", "purge.failed", "purge.failed", "purge.confirmed"}
	if got := f.log.types(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("events %v, want %v", got, want)
	}
	if !strings.Contains(f.log.events[5], `"job_done":true`) || !strings.Contains(f.log.events[0], `"requested_by":"spiffe://custody.test/admin/alice"`) {
		t.Fatalf("events %v", f.log.events)
	}
	if f.gauge(t, "custody_purge_pending_jobs", "") != 0 || f.gauge(t, "custody_purge_failures_total", "cdn:cf") != 3 {
		t.Fatalf("metrics: pending %v failures %v", f.gauge(t, "custody_purge_pending_jobs", ""), f.gauge(t, "custody_purge_failures_total", "cdn:cf"))
	}
	m.Step(t.Context())
	if edge.count() != 1 || cdn.count() != 4 {
		t.Fatal("a finished job was attempted again")
	}
	// The same (digest, reference) again is the same job, not a new purge.
	again, err := m.Enqueue(t.Context(), "spiffe://custody.test/admin/bob", "admin", "ticket-1", []string{d1})
	if err != nil || again[0].ID != jobs[0].ID || !again[0].Done {
		t.Fatalf("re-enqueue = %+v, %v", again, err)
	}
}

// TestKeepsFailingRaisesStuckMetric: a target that never confirms is
// retried with a capped backoff, counts as stuck once it failed AlertAfter
// times, and the job stays pending.
func TestKeepsFailingRaisesStuckMetric(t *testing.T) {
	f := newFixture(t)
	bad := &flaky{name: "cdn:akamai", failures: -1}
	m := f.open(t, &flaky{name: "edge:a"}, bad)
	if _, err := m.Enqueue(t.Context(), "spiffe://custody.test/service/signer", "key-revoked", "rev-7", []string{d1, d2}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		m.Step(t.Context())
		f.clock.advance(time.Minute + time.Second) // past the cap
	}
	if bad.count() != 20 {
		t.Fatalf("%d attempts on the failing target, want 20 (2 jobs, 10 steps past the backoff cap)", bad.count())
	}
	if got := f.gauge(t, "custody_purge_stuck", "cdn:akamai"); got != 2 {
		t.Fatalf("custody_purge_stuck{cdn:akamai} = %v, want 2", got)
	}
	if got := f.gauge(t, "custody_purge_stuck", "edge:a"); got != 0 {
		t.Fatalf("custody_purge_stuck{edge:a} = %v, want 0", got)
	}
	if got := f.gauge(t, "custody_purge_pending_jobs", ""); got != 2 {
		t.Fatalf("pending = %v", got)
	}
	st := m.Status()
	if st[0].Done || !strings.Contains(st[0].Targets[1].LastError, "503") || st[0].Targets[1].Next.Sub(f.clock.now()) > time.Minute {
		t.Fatalf("status %+v", st[0])
	}
}

// TestRestartResumesTheQueue: jobs and unlogged events survive a restart;
// the new manager purges only what was not confirmed and then logs
// everything in order once the catalog is back.
func TestRestartResumesTheQueue(t *testing.T) {
	f := newFixture(t)
	f.log.down = true
	edge := &flaky{name: "edge:a"}
	m := f.open(t, edge, &flaky{name: "cdn:cf", failures: -1})
	if _, err := m.Enqueue(t.Context(), "spiffe://custody.test/service/gatekeeper", "kill-switch", "ks-1", []string{d1}); err != nil {
		t.Fatal(err)
	}
	m.Step(t.Context())
	if edge.count() != 1 {
		t.Fatal("the catalog being down stopped the purge")
	}
	if got := f.gauge(t, "custody_purge_events_unlogged", ""); got != 3 {
		t.Fatalf("unlogged events = %v, want 3", got)
	}

	// "Restart": a new manager over the same directory, the CDN fixed.
	edge2, cdn2 := &flaky{name: "edge:a"}, &flaky{name: "cdn:cf"}
	m2 := f.open(t, edge2, cdn2)
	if st := m2.Status(); len(st) != 1 || st[0].Done || !st[0].Targets[0].Confirmed || st[0].Targets[1].Attempts != 1 {
		t.Fatalf("status after restart %+v", st)
	}
	f.clock.advance(time.Second)
	m2.Step(t.Context())
	if edge2.count() != 0 || cdn2.count() != 1 {
		t.Fatalf("after restart: edge %d calls (already confirmed), cdn %d", edge2.count(), cdn2.count())
	}
	if len(f.log.types()) != 0 {
		t.Fatal("events logged while the catalog is down")
	}
	f.log.mu.Lock()
	f.log.down = false
	f.log.mu.Unlock()
	m2.Step(t.Context())
	want := "purge.requested,purge.confirmed,purge.failed,purge.confirmed"
	if got := strings.Join(f.log.types(), ","); got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
	if st := m2.Status(); !st[0].Done {
		t.Fatalf("job not done: %+v", st)
	}
	m3 := f.open(t, edge2, cdn2)
	m3.Step(t.Context())
	if len(f.log.types()) != 4 || cdn2.count() != 1 {
		t.Fatal("a second restart repeated events or purges")
	}
}

// TestHostileRequests: malformed, oversized and duplicate input is refused
// and queues nothing; a full queue refuses more.
func TestHostileRequests(t *testing.T) {
	f := newFixture(t)
	m := f.open(t, &flaky{name: "edge:a"})
	many := make([]string, purges.MaxDigests+1)
	for i := range many {
		many[i] = fmt.Sprintf("sha256:%064x", i)
	}
	for name, tc := range map[string]struct {
		reason, ref string
		digests     []string
	}{
		"no digests":        {"admin", "r", nil},
		"too many":          {"admin", "r", many},
		"duplicate":         {"admin", "r", []string{d1, strings.ToUpper(d1[:7]) + d1[7:]}},
		"not a digest":      {"admin", "r", []string{"../../etc/passwd"}},
		"short digest":      {"admin", "r", []string{"sha256:abcd"}},
		"unknown reason":    {"because", "r", []string{d1}},
		"empty reference":   {"admin", "", []string{d1}},
		"path reference":    {"admin", "a/../b", []string{d1}},
		"long reference":    {"admin", strings.Repeat("a", 65), []string{d1}},
		"newline in ref":    {"admin", "a\nb", []string{d1}},
		"control in digest": {"admin", "r", []string{d1 + "\x00"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := m.Enqueue(t.Context(), "spiffe://custody.test/admin/x", tc.reason, tc.ref, tc.digests)
			if !errors.Is(err, purges.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if st := m.Status(); len(st) != 0 {
		t.Fatalf("refused requests queued %d jobs", len(st))
	}

	small, err := purges.Open(purges.Config{Dir: t.TempDir(), Targets: []purges.Target{&flaky{name: "edge:a", failures: -1}}, Log: f.log, MaxJobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := small.Enqueue(t.Context(), "a", "admin", "r1", []string{d1, d2}); err != nil {
		t.Fatal(err)
	}
	if _, err := small.Enqueue(t.Context(), "a", "admin", "r2", []string{d1}); !errors.Is(err, purges.ErrFull) {
		t.Fatalf("third job: %v, want ErrFull", err)
	}
	if len(small.Status()) != 2 {
		t.Fatal("a refused request queued a job")
	}
}

// TestDamagedQueueFileStopsStart: a queue file that does not parse is not
// silently replaced by an empty queue.
func TestDamagedQueueFileStopsStart(t *testing.T) {
	dir := t.TempDir()
	for _, body := range []string{`{"pending": [`, `{"pending": [], "extra": 1}`, `{"pending": []} {}`} {
		os.WriteFile(filepath.Join(dir, "purges.json"), []byte(body), 0o600)
		_, err := purges.Open(purges.Config{Dir: dir, Log: &memLog{}})
		if err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Fatalf("Open over %q = %v, want a damaged-file error", body, err)
		}
	}
}

// TestUnwritableQueueIsUnavailable: when the queue cannot be written the
// request fails and nothing is promised.
func TestUnwritableQueueIsUnavailable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	dir := t.TempDir()
	m, err := purges.Open(purges.Config{Dir: dir, Targets: []purges.Target{&flaky{name: "edge:a"}}, Log: &memLog{}})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o500)
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	if _, err := m.Enqueue(t.Context(), "a", "admin", "r", []string{d1}); !errors.Is(err, purges.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if len(m.Status()) != 0 {
		t.Fatal("an unsaved job is listed")
	}
}

// TestCloudFrontTargetThroughTheVendorClient: the real CloudFront client
// against a loopback API that refuses twice; the manager retries with the
// same CallerReference and confirms.
func TestCloudFrontTargetThroughTheVendorClient(t *testing.T) {
	api := &purgetest.CloudFront{DistributionID: "EDFDVBD6EXAMPLE", AccessKeyID: "AKIDTEST", SecretAccessKey: "c2VjcmV0", Fail: 2}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	p, err := cloudfront.New(cloudfront.Config{DistributionID: "EDFDVBD6EXAMPLE", AccessKeyID: "AKIDTEST", SecretAccessKey: "c2VjcmV0", Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	m := f.open(t, purges.NewCDN("cf", p))
	if _, err := m.Enqueue(t.Context(), "spiffe://custody.test/service/gatekeeper", "artifact-revoked", "rev-42", []string{d1}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		m.Step(t.Context())
		f.clock.advance(time.Minute)
	}
	st := m.Status()
	if !st[0].Done || st[0].Targets[0].Attempts != 3 {
		t.Fatalf("status %+v (API saw %d calls, refused %v)", st, api.Calls(), api.Problems())
	}
	if inv := api.Invalidations(); len(inv) != 1 || inv[0].CallerReference != "rev-42" || api.Calls() != 3 {
		t.Fatalf("invalidations %+v after %d calls", inv, api.Calls())
	}
	if f.gauge(t, "custody_purge_failures_total", "cdn:cf") != 2 {
		t.Fatalf("failures = %v", f.gauge(t, "custody_purge_failures_total", "cdn:cf"))
	}
	for _, e := range f.log.events {
		if strings.Contains(e, "c2VjcmV0") {
			t.Fatalf("event carries the secret: %s", e)
		}
	}
}

// FuzzEnqueue: whatever a caller sends, Enqueue either refuses it as
// invalid or queues canonical digests, never panics, and the queue file it
// writes opens again.
func FuzzEnqueue(f *testing.F) {
	f.Add("admin", "ticket-1", d1, d2)
	f.Add("kill-switch", "a:b.c_d-e", "SHA256:"+strings.ToUpper(d1[7:]), "")
	f.Add("x", "", "sha256:", "../..")
	f.Fuzz(func(t *testing.T, reason, ref, a, b string) {
		dir := t.TempDir()
		m, err := purges.Open(purges.Config{Dir: dir, Targets: []purges.Target{&flaky{name: "edge:a"}}, Log: &memLog{}})
		if err != nil {
			t.Fatal(err)
		}
		digests := []string{a}
		if b != "" {
			digests = append(digests, b)
		}
		jobs, err := m.Enqueue(t.Context(), "spiffe://custody.test/admin/f", reason, ref, digests)
		if err != nil {
			if !errors.Is(err, purges.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			return
		}
		for _, j := range jobs {
			if len(j.Digest) != 71 || !strings.HasPrefix(j.Digest, "sha256:") || strings.ToLower(j.Digest) != j.Digest {
				t.Fatalf("queued digest %q", j.Digest)
			}
		}
		if _, err := purges.Open(purges.Config{Dir: dir, Log: &memLog{}}); err != nil {
			t.Fatalf("the queue file does not open again: %v", err)
		}
	})
}

// TestEnqueueOnThenAllTargets: EnqueueOn queues a job on the CDN targets
// only; once it finished, Enqueue of the same (digest, reference) adds the
// missing edge to that job, which is pending again and purged on the edge
// alone; the addition survives a restart and is logged.
func TestEnqueueOnThenAllTargets(t *testing.T) {
	f := newFixture(t)
	edge, cdn := &flaky{name: "edge:a"}, &flaky{name: "cdn:g"}
	m := f.open(t, edge, cdn)
	jobs, err := m.EnqueueOn(t.Context(), "gk", "kill-switch", "ks-1", []string{d1}, purges.IsCDN)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs[0].Targets) != 1 || jobs[0].Targets[0].Name != "cdn:g" {
		t.Fatalf("targets %+v, want cdn:g only", jobs[0].Targets)
	}
	m.Step(t.Context())
	if st := m.Status(); len(st) != 1 || !st[0].Done {
		t.Fatalf("status %+v, want one finished job", st)
	}
	again, err := m.Enqueue(t.Context(), "gk", "kill-switch", "ks-1", []string{d1})
	if err != nil {
		t.Fatal(err)
	}
	if again[0].ID != jobs[0].ID || again[0].Done || len(again[0].Targets) != 2 {
		t.Fatalf("job %+v, want %s pending on both targets", again[0], jobs[0].ID)
	}
	m = f.open(t, edge, cdn) // restart
	m.Step(t.Context())
	if edge.count() != 1 || cdn.count() != 1 {
		t.Fatalf("edge asked %d times, CDN %d, want once each", edge.count(), cdn.count())
	}
	st := m.Status()
	if len(st) != 1 || !st[0].Done {
		t.Fatalf("status %+v, want the one job finished", st)
	}
	if got := strings.Join(f.log.types(), ","); got != "purge.requested,purge.confirmed,purge.requested,purge.confirmed" {
		t.Fatalf("events %s", got)
	}
	// Nothing missing: the same job, nothing queued.
	if _, err := m.Enqueue(t.Context(), "gk", "kill-switch", "ks-1", []string{d1}); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(); len(st) != 1 || !st[0].Done {
		t.Fatalf("status %+v after a repeat", st)
	}
}
