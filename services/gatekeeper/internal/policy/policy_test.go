package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/services/gatekeeper/internal/load"
	defaultpolicy "github.com/custody-dev/custody/services/gatekeeper/policy"
)

func good() Input {
	return Input{
		Artifact: Artifact{
			Name: "app", Version: "1.4.0", Digest: "sha256:" + strings.Repeat("ab", 32), Size: 4,
			Channel: "staging", BuilderID: "spiffe://custody.test/builder/ci",
			SourceRepo: "https://git.example/app", SourceCommit: "3f2a", CreatedAt: time.Unix(1700000000, 0).UTC(),
		},
		Environment:  "staging",
		Verification: Verification{Signature: true, SubjectMatch: true, LogInclusion: true, Checkpoint: true, BlobIntegrity: true},
		TrustDomain:  "custody.test",
	}
}

func defaultPolicy(t *testing.T) *Policy {
	t.Helper()
	p, err := New(t.Context(), defaultpolicy.DefaultName, defaultpolicy.Default())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultPolicy(t *testing.T) {
	p := defaultPolicy(t)
	tests := []struct {
		name   string
		modify func(*Input)
		want   []string
	}{
		{"good", func(*Input) {}, []string{}},
		{"prod to dev", func(in *Input) { in.Artifact.Channel, in.Environment = "prod", "dev" }, []string{}},
		{"staging to prod", func(in *Input) { in.Environment = "prod" },
			[]string{`channel "staging" may not deploy to "prod": "prod" accepts channels prod`}},
		{"dev to staging", func(in *Input) { in.Artifact.Channel = "dev" },
			[]string{`channel "dev" may not deploy to "staging": "staging" accepts channels prod, staging`}},
		{"unknown environment", func(in *Input) { in.Environment = "Prod" },
			[]string{`environment "Prod" is unknown: want one of dev, prod, staging`}},
		{"unknown channel", func(in *Input) { in.Artifact.Channel = "" },
			[]string{`channel "" is unknown: want one of dev, prod, staging`}},
		{"builder of another trust domain", func(in *Input) { in.Artifact.BuilderID = "spiffe://evil.test/builder/ci" },
			[]string{`builder "spiffe://evil.test/builder/ci" is not a builder of trust domain "custody.test" (want spiffe://custody.test/builder/<pipeline>)`}},
		{"deployer as builder", func(in *Input) { in.Artifact.BuilderID = "spiffe://custody.test/deployer/pipeline" },
			[]string{`builder "spiffe://custody.test/deployer/pipeline" is not a builder of trust domain "custody.test" (want spiffe://custody.test/builder/<pipeline>)`}},
		{"failed check with messages", func(in *Input) {
			in.Verification.LogInclusion = false
			in.Verification.Messages = []string{"inclusion proof does not match the checkpoint"}
		}, []string{"inclusion proof does not match the checkpoint"}},
		{"failed check without messages", func(in *Input) { in.Verification.BlobIntegrity = false },
			[]string{`verification check "blob_integrity" did not pass`}},
		{"messages without a failed check are not reasons", func(in *Input) { in.Verification.Messages = []string{"note"} }, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := good()
			tt.modify(&in)
			got, err := p.Evaluate(t.Context(), in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNewDigest: a policy made by New is a bundle of its one file.
func TestNewDigest(t *testing.T) {
	src := defaultpolicy.Default()
	if got, want := defaultPolicy(t).Digest(), shellDirHash(map[string]string{defaultpolicy.DefaultName: string(src)}); got != want {
		t.Errorf("Digest() = %s, want %s", got, want)
	}
}

func TestNewRefuses(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"syntax error", "package custody.admission\ndeny contains x if {", "parse policy"},
		{"other package", "package other\ndeny contains \"x\" if { false }", "package is data.other, want custody.admission"},
		{"no deny rule", "package custody.admission\nallow := true", "no deny rule"},
		{"network builtin", "package custody.admission\ndeny contains x if { x := http.send({\"method\": \"get\", \"url\": \"http://x\"}).body }", "http.send"},
		{"environment builtin", "package custody.admission\ndeny contains x if { x := opa.runtime().env.HOME }", "opa.runtime"},
		{"strict mode", "package custody.admission\nimport data.unused\ndeny contains \"x\" if { false }", "unused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(t.Context(), "p.rego", []byte(tt.src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestEvaluateFailsClosed checks that a policy that gives no answer is an
// error, never an empty set of reasons.
func TestEvaluateFailsClosed(t *testing.T) {
	tests := []struct {
		name, src string
	}{
		{"undefined deny", "package custody.admission\ndeny := {\"x\"} if { input.nothing }"},
		{"deny not a set", "package custody.admission\ndeny := true"},
		{"builtin error", "package custody.admission\ndeny contains x if { x := sprintf(\"%d\", [to_number(input.environment)]) }"},
		{"conflicting values", "package custody.admission\ndeny := {\"a\"} if { true }\ndeny := {\"b\"} if { true }"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(t.Context(), "p.rego", []byte(tt.src))
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Evaluate(t.Context(), good())
			if !errors.Is(err, ErrPolicy) {
				t.Fatalf("Evaluate = %q, %v; want ErrPolicy", got, err)
			}
		})
	}
}

func TestEvaluateNonStringReasonStillDenies(t *testing.T) {
	p, err := New(t.Context(), "p.rego", []byte("package custody.admission\ndeny contains {\"code\": 7}"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Evaluate(t.Context(), good())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{`{"code":7}`}, got); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
}

func TestEvaluateUsesClock(t *testing.T) {
	src := "package custody.admission\ndeny contains \"frozen\" if { time.now_ns() < 1000000000000000000 }"
	for _, tt := range []struct {
		now  time.Time
		want int
	}{{time.Unix(0, 0), 1}, {time.Unix(2000000000, 0), 0}} {
		p, err := New(t.Context(), "p.rego", []byte(src), WithClock(func() time.Time { return tt.now }))
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.Evaluate(t.Context(), good())
		if err != nil || len(got) != tt.want {
			t.Errorf("at %v: Evaluate = %q, %v; want %d reasons", tt.now, got, err, tt.want)
		}
	}
}

func TestEvaluateCanceled(t *testing.T) {
	p := defaultPolicy(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := p.Evaluate(ctx, good()); err == nil {
		t.Fatal("Evaluate with a canceled context succeeded")
	}
}

func TestEvaluateConcurrently(t *testing.T) {
	p := defaultPolicy(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			in := good()
			if i%2 == 1 {
				in.Environment = "prod"
			}
			got, err := p.Evaluate(t.Context(), in)
			if err != nil || (len(got) == 0) != (i%2 == 0) {
				t.Errorf("goroutine %d: Evaluate = %q, %v", i, got, err)
			}
		})
	}
	wg.Wait()
}

// BenchmarkEvaluate is OPA evaluating the default admission policy alone,
// at 1 and 64 concurrent callers: the floor under BenchmarkAdmit (server),
// which `make bench-gatekeeper` runs in the same invocation.
func BenchmarkEvaluate(b *testing.B) {
	p, err := New(b.Context(), defaultpolicy.DefaultName, defaultpolicy.Default())
	if err != nil {
		b.Fatal(err)
	}
	in := good()
	for _, callers := range []int{1, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			f := load.Run(b, callers, 5000, func(ctx context.Context, _ int) error {
				denies, err := p.Evaluate(ctx, in)
				if err == nil && len(denies) > 0 {
					err = fmt.Errorf("the good input is denied: %q", denies)
				}
				return err
			})
			b.Logf("OPA alone, %d callers: %.0f evaluations/s, p50 %.3f ms, p99 %.3f ms over %d evaluations; %.0f µs CPU each", callers, f.PerSecond, f.P50, f.P99, f.Calls, f.CPU)
		})
	}
}
