package admission

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/custody-dev/custody/libs/attest"
)

func TestValidate(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0a", 32)
	tests := []struct {
		name string
		req  Request
		want string // empty: valid
	}{
		{"name and version", Request{Name: "app", Version: "1.0.0", Environment: "prod"}, ""},
		{"digest", Request{Digest: digest, Environment: "staging"}, ""},
		{"environment with dash", Request{Digest: digest, Environment: "eu-prod_2"}, ""},
		{"both", Request{Name: "app", Version: "1", Digest: digest, Environment: "prod"}, "not both"},
		{"neither", Request{Environment: "prod"}, "name and version (or digest) are required"},
		{"name only", Request{Name: "app", Environment: "prod"}, "name and version (or digest) are required"},
		{"upper-case digest", Request{Digest: strings.ToUpper(digest), Environment: "prod"}, "want sha256:<64 lowercase hex>"},
		{"short digest", Request{Digest: "sha256:abc", Environment: "prod"}, "want sha256:<64 lowercase hex>"},
		{"no environment", Request{Digest: digest}, "environment"},
		{"environment with a space", Request{Digest: digest, Environment: "prod "}, "environment"},
		{"environment upper case", Request{Digest: digest, Environment: "Prod"}, "environment"},
		{"environment too long", Request{Digest: digest, Environment: strings.Repeat("e", 65)}, "environment"},
		{"name too long", Request{Name: strings.Repeat("n", 1025), Version: "1", Environment: "prod"}, "name: want at most"},
		{"version with a newline", Request{Name: "app", Version: "1\n", Environment: "prod"}, "version: want at most"},
		{"name not UTF-8", Request{Name: "\xff", Version: "1", Environment: "prod"}, "name: want at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validate(tt.req)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestBound(t *testing.T) {
	many := make([]string, 40)
	for i := range many {
		many[i] = fmt.Sprintf("reason %d", i)
	}
	got := bound(many)
	if len(got) != maxReasons+1 || got[maxReasons] != "… and 24 more reasons" {
		t.Errorf("bound(40 reasons) = %d reasons ending %q", len(got), got[len(got)-1])
	}

	long := strings.Repeat("é", maxReasonLen) // 2 bytes each: cut mid-rune
	got = bound([]string{long, "a\nb\x1b[31mc", "\xffbad"})
	if len(got[0]) > maxReasonLen+len("…") || !utf8.ValidString(got[0]) || !strings.HasSuffix(got[0], "…") {
		t.Errorf("long reason bounded to %d bytes, valid UTF-8 %v", len(got[0]), utf8.ValidString(got[0]))
	}
	if got[1] != "a b [31mc" {
		t.Errorf("control characters kept: %q", got[1])
	}
	if !utf8.ValidString(got[2]) {
		t.Errorf("invalid UTF-8 kept: %q", got[2])
	}
}

func TestDedupe(t *testing.T) {
	got := dedupe([]string{"a", "b", "a", "c", "b"})
	if strings.Join(got, ",") != "a,b,c" {
		t.Errorf("dedupe = %q", got)
	}
}

// slowSigner answers PublicKeys after release is closed and counts calls.
type slowSigner struct {
	release chan struct{}
	calls   atomic.Int32
	err     error
}

func (s *slowSigner) PublicKeys(ctx context.Context) ([]attest.Key, error) {
	s.calls.Add(1)
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if s.err != nil {
		return nil, s.err
	}
	return []attest.Key{{ID: "k1", Purpose: "artifact", Algorithm: "ecdsa-p256-sha256", ValidFrom: time.Unix(0, 0)}}, nil
}

func (s *slowSigner) SignDecision(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("not used")
}

func TestKeyringCoalescesRefreshes(t *testing.T) {
	s := &slowSigner{release: make(chan struct{})}
	k := newKeyring(s)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			keys, gen, err := k.refresh(t.Context(), 0)
			if err != nil || len(keys) != 1 || gen != 1 {
				t.Errorf("refresh = %v, %d, %v", keys, gen, err)
			}
		})
	}
	time.Sleep(20 * time.Millisecond) // let them queue up behind the first
	close(s.release)
	wg.Wait()
	if n := s.calls.Load(); n != 1 {
		t.Errorf("signer asked %d times, want 1", n)
	}
	if _, gen, _ := k.get(t.Context()); gen != 1 {
		t.Errorf("get after refresh: generation %d, want 1 (cached)", gen)
	}
	if _, gen, _ := k.refresh(t.Context(), 1); gen != 2 {
		t.Errorf("refresh of the current generation: got generation %d, want 2", gen)
	}
}

func TestKeyringFailsClosed(t *testing.T) {
	t.Run("signer fails", func(t *testing.T) {
		s := &slowSigner{release: make(chan struct{}), err: errors.New("connection refused")}
		close(s.release)
		if _, _, err := newKeyring(s).get(t.Context()); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("get = %v, want ErrUnavailable", err)
		}
	})
	t.Run("no keys", func(t *testing.T) {
		if _, _, err := newKeyring(noKeys{}).get(t.Context()); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("get = %v, want ErrUnavailable", err)
		}
	})
	t.Run("waiter gives up", func(t *testing.T) {
		s := &slowSigner{release: make(chan struct{})}
		defer close(s.release)
		k := newKeyring(s)
		go func() { _, _, _ = k.get(context.Background()) }()
		for s.calls.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		if _, _, err := k.get(ctx); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("get = %v, want ErrUnavailable and DeadlineExceeded", err)
		}
	})
}

type noKeys struct{}

func (noKeys) PublicKeys(context.Context) ([]attest.Key, error)     { return nil, nil }
func (noKeys) SignDecision(context.Context, []byte) ([]byte, error) { return nil, nil }

func TestNewChecksConfig(t *testing.T) {
	_, err := New(Config{LogVerifierKey: "not a key"})
	if err == nil {
		t.Fatal("New with an empty config succeeded")
	}
	for _, want := range []string{"catalog, signer and publisher", "policy", "metrics and logger", "verifier SPIFFE ID", "log verifier key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
