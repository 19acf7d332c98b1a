package rollback

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
)

type memLog struct {
	mu     sync.Mutex
	events []admission.Event
	fail   error
}

func (l *memLog) AppendEvent(_ context.Context, e admission.Event) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return 0, l.fail
	}
	l.events = append(l.events, e)
	return int64(len(l.events) - 1), nil
}

func (l *memLog) types() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		out = append(out, e.Type)
	}
	return out
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

const (
	alice = "spiffe://custody.test/admin/alice"
	bob   = "spiffe://custody.test/approver/bob"
	carol = "spiffe://custody.test/approver/carol"
)

func open(t *testing.T, file string, log Logger, c *clock) *Store {
	t.Helper()
	s, err := Open(Config{File: file, Quorum: 2, TTL: time.Hour, Log: log, Logger: slog.New(slog.DiscardHandler), Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCompare(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.2.3", "1.2.4", -1},
		{"1.10.0", "1.9.0", 1},
		{"v1.2.3", "1.2.3", 0},
		{"1.2.3+a", "1.2.3+b", 0},
		{"1.2.3-rc.1", "1.2.3", -1},
		{"2.0.0", "10.0.0", -1},
		{"1.2", "1.0.0", -1},     // not semver: lower than every semver
		{"build-9", "1.0.0", -1}, // not semver
		{"1.0.0", "build-9", 1},
		{"build-10", "build-9", 1}, // non-semver: numbers by value
		{"build-9", "build-9", 0},
		{"2024.01.10", "2024.01.9", 1},
		{"2024.01.10", "2024.1.9", -1}, // 2024.1.9 is a semantic version
		{"2024.1.09", "2024.01.09", 1}, // same numbers: byte order decides, never equal
		{"r100a", "r100b", -1},
		{"r100", "r100a", -1},
		{"a", "1", 1},
		{"20261203", "20261202.1", 1},
		{"", "0", -1},
	}
	for _, tt := range tests {
		if got := Compare(tt.a, tt.b); got != tt.want {
			t.Errorf("Compare(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestDenialAndQuorum(t *testing.T) {
	log := &memLog{}
	c := &clock{t: time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)}
	file := filepath.Join(t.TempDir(), "rollbacks.json")
	s := open(t, file, log, c)
	ctx := t.Context()

	if d := s.Denial("app", "1.3.0", "prod", []string{"1.2.0"}); d != "" {
		t.Errorf("a higher version is denied: %s", d)
	}
	if d := s.Denial("app", "1.0.0", "prod", nil); d != "" {
		t.Errorf("a first deployment is denied: %s", d)
	}
	d := s.Denial("app", "1.1.0", "prod", []string{"1.2.0"})
	for _, want := range []string{"app@1.2.0", "highest version deployed to prod", "custody rollback request app --from 1.2.0 --to 1.1.0 --env prod"} {
		if !strings.Contains(d, want) {
			t.Errorf("denial %q does not say %q", d, want)
		}
	}

	res, err := s.Request(ctx, "app", "1.2.0", "1.1.0", "prod", "1.2.0 corrupts sessions", alice)
	if err != nil {
		t.Fatal(err)
	}
	id := res.Request.ID
	if _, err := s.Approve(ctx, id, alice); !errors.Is(err, ErrRefused) {
		t.Errorf("self-approval = %v, want ErrRefused", err)
	}
	if r, err := s.Approve(ctx, id, bob); err != nil || r.Request.Granted() {
		t.Fatalf("first approval = %+v, %v; want counted, not granted", r, err)
	}
	if _, err := s.Approve(ctx, id, bob); !errors.Is(err, ErrRefused) {
		t.Errorf("duplicate approval = %v, want ErrRefused", err)
	}
	if d := s.Denial("app", "1.1.0", "prod", []string{"1.2.0"}); d == "" {
		t.Error("one approval of two lifted the rollback rule")
	}
	// The log being down: the approval does not count.
	log.fail = errors.New("catalog down")
	if _, err := s.Approve(ctx, id, carol); !errors.Is(err, ErrUnavailable) {
		t.Errorf("approval with the log down = %v, want ErrUnavailable", err)
	}
	log.fail = nil
	if d := s.Denial("app", "1.1.0", "prod", []string{"1.2.0"}); d == "" {
		t.Error("an unlogged approval counted")
	}
	r, err := s.Approve(ctx, id, carol)
	if err != nil || !r.Request.Granted() {
		t.Fatalf("second approval = %+v, %v; want granted", r, err)
	}
	if d := s.Denial("app", "1.1.0", "prod", []string{"1.2.0"}); d != "" {
		t.Errorf("granted rollback still denied: %s", d)
	}
	// Only that name, from, to and environment.
	for _, o := range [][4]string{
		{"other", "1.1.0", "prod", "1.2.0"},
		{"app", "1.0.0", "prod", "1.2.0"},
		{"app", "1.1.0", "staging", "1.2.0"},
		{"app", "1.1.0", "prod", "1.3.0"},
	} {
		if d := s.Denial(o[0], o[1], o[2], []string{"1.0.0", o[3], "0.9.0"}); d == "" {
			t.Errorf("rollback granted for app 1.2.0→1.1.0 in prod lifts %v", o)
		}
	}
	// Every step logged, with its fixed fields.
	want := []string{tlog.TypeRollbackRequested, tlog.TypeRollbackApproved, tlog.TypeRollbackGranted}
	if got := log.types(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("logged %v, want %v", got, want)
	}
	var det map[string]any
	if err := json.Unmarshal(log.events[2].Details, &det); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "name", "from_version", "to_version", "environment", "requested_by", "expires_at", "approvals", "quorum", "by"} {
		if _, ok := det[k]; !ok {
			t.Errorf("rollback.granted details lack %s: %s", k, log.events[2].Details)
		}
	}

	// Durable across a restart.
	s2 := open(t, file, log, c)
	if d := s2.Denial("app", "1.1.0", "prod", []string{"1.2.0"}); d != "" {
		t.Errorf("after a restart the granted rollback is lost: %s", d)
	}
	// Expiry.
	c.t = c.t.Add(time.Hour)
	if d := s2.Denial("app", "1.1.0", "prod", []string{"1.2.0"}); d == "" {
		t.Error("an expired rollback approval still lifts the rule")
	}
	if n := len(s2.List()); n != 0 {
		t.Errorf("List after expiry = %d requests, want 0", n)
	}
	if _, err := s2.Approve(ctx, id, "spiffe://custody.test/approver/dave"); !errors.Is(err, ErrNotFound) {
		t.Errorf("approving an expired request = %v, want ErrNotFound", err)
	}
}

func TestRequestRefuses(t *testing.T) {
	log := &memLog{}
	s := open(t, filepath.Join(t.TempDir(), "r.json"), log, &clock{t: time.Now()})
	for _, tt := range []struct{ name, from, to, env, reason string }{
		{"app", "1.1.0", "1.2.0", "prod", "up is no rollback"},
		{"app", "1.1.0", "1.1.0", "prod", "same"},
		{"app", "1.2.0", "1.1.0", "prod", ""},
		{"app", "1.2.0", "1.1.0", "Prod!", "env"},
		{"../app", "1.2.0", "1.1.0", "prod", "name"},
		{"app", "1.2.0", "1.1.0", "prod", "bad\x00reason"},
		{"app", "1.2.0", "1.1.0", "prod", strings.Repeat("x", maxReasonLen+1)},
	} {
		if _, err := s.Request(t.Context(), tt.name, tt.from, tt.to, tt.env, tt.reason, alice); !errors.Is(err, ErrInvalid) {
			t.Errorf("Request(%q, %q→%q, %q) = %v, want ErrInvalid", tt.name, tt.from, tt.to, tt.env, err)
		}
	}
	log.fail = errors.New("down")
	if _, err := s.Request(t.Context(), "app", "1.2.0", "1.1.0", "prod", "r", alice); !errors.Is(err, ErrUnavailable) {
		t.Errorf("request with the log down = %v, want ErrUnavailable", err)
	}
	if n := len(s.List()); n != 0 {
		t.Errorf("an unlogged request exists: %d", n)
	}
}

func FuzzCompare(f *testing.F) {
	for _, s := range []string{"1.2.3", "v1.2.3-rc.1+b", "build-9", "build-10", "2024.01.10", "1.2", ""} {
		f.Add(s, "1.2.3")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if Compare(a, b) != -Compare(b, a) {
			t.Errorf("Compare(%q, %q) is not antisymmetric", a, b)
		}
		if Compare(a, a) != 0 {
			t.Errorf("Compare(%q, %q) != 0", a, a)
		}
		if a != b && canonical(a) == "" && Compare(a, b) == 0 {
			t.Errorf("Compare(%q, %q) = 0 for two different non-semver versions", a, b)
		}
	})
}
