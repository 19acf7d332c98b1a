package keys_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/custody-dev/custody/services/signer/internal/keys"
)

// slowBatcher "signs" by prefixing the key version, after a delay, and
// records batch sizes.
type slowBatcher struct {
	mu      sync.Mutex
	batches []int
	fail    error
}

func (s *slowBatcher) Kind() string { return "fake" }
func (s *slowBatcher) Create(context.Context, string, string) (keys.Version, error) {
	return keys.Version{}, nil
}
func (s *slowBatcher) Rotate(context.Context, string) (keys.Version, error) {
	return keys.Version{}, nil
}
func (s *slowBatcher) Versions(context.Context, string) ([]keys.Version, error) { return nil, nil }
func (s *slowBatcher) Close() error                                             { return nil }

func (s *slowBatcher) Sign(ctx context.Context, name string, version int, m []byte) ([]byte, error) {
	sigs, err := s.SignBatch(ctx, name, version, [][]byte{m})
	if err != nil {
		return nil, err
	}
	return sigs[0], nil
}

func (s *slowBatcher) SignBatch(_ context.Context, name string, version int, ms [][]byte) ([][]byte, error) {
	time.Sleep(5 * time.Millisecond)
	s.mu.Lock()
	s.batches = append(s.batches, len(ms))
	fail := s.fail
	s.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	out := make([][]byte, len(ms))
	for i, m := range ms {
		out[i] = append(fmt.Appendf(nil, "%s/v%d:", name, version), m...)
	}
	return out, nil
}

func TestCoalescerBatchesConcurrentCalls(t *testing.T) {
	fake := &slowBatcher{}
	c := keys.NewCoalescer(fake, 2, 50)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() {
			msg := fmt.Appendf(nil, "m%d", i)
			version := 1 + i%2
			sig, err := c.Sign(t.Context(), "k", version, msg)
			if err == nil && !bytes.Equal(sig, append(fmt.Appendf(nil, "k/v%d:", version), msg...)) {
				err = fmt.Errorf("message %d got %q", i, sig)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total, biggest := 0, 0
	for _, n := range fake.batches {
		total += n
		biggest = max(biggest, n)
		if n > 50 {
			t.Fatalf("batch of %d, limit 50", n)
		}
	}
	if total != 200 || biggest < 2 || len(fake.batches) > 100 {
		t.Fatalf("%d messages in %d batches (largest %d): want all 200 coalesced", total, len(fake.batches), biggest)
	}
}

func TestCoalescerErrorsAndCancellation(t *testing.T) {
	boom := errors.New("vault sealed")
	fake := &slowBatcher{fail: boom}
	c := keys.NewCoalescer(fake, 1, 10)
	if _, err := c.Sign(t.Context(), "k", 1, []byte("m")); !errors.Is(err, boom) {
		t.Fatalf("error not propagated: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Sign(ctx, "k", 1, []byte("m")); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled call: %v", err)
	}
}

func TestNewCoalescerPassesThroughNonBatchers(t *testing.T) {
	var b keys.Backend = plain{}
	if got := keys.NewCoalescer(b, 4, 100); got != b {
		t.Fatal("a back end without batch signing was wrapped")
	}
}

type plain struct{ keys.Backend }
