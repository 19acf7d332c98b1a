package bindings

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestBindOnce(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := Binding{Name: "team/app", Version: "1", Digest: "sha256:a", Size: 1}
	if created, err := s.Bind(a); err != nil || !created {
		t.Fatal(created, err)
	}
	if created, err := s.Bind(a); err != nil || created {
		t.Fatalf("same binding again: %v %v", created, err)
	}
	b := a
	b.Digest = "sha256:b"
	if _, err := s.Bind(b); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "sha256:a") {
		t.Fatalf("other digest: %v, want ErrConflict naming sha256:a", err)
	}
}

func TestConcurrentBindersOneWins(t *testing.T) {
	s, _ := Open(t.TempDir())
	var wg sync.WaitGroup
	results := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Bind(Binding{Name: "app", Version: "1", Digest: "sha256:" + string(rune('a'+i))})
			results <- err
		}()
	}
	wg.Wait()
	close(results)
	ok := 0
	for err := range results {
		if err == nil {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("%d binders won, want 1", ok)
	}
}

// Racers with the same bytes as the winner succeed without creating;
// racers with other bytes get ErrConflict naming the winner.
func TestConcurrentBindsSameAndOtherBytes(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const racers = 16
	for round := range 20 {
		version := fmt.Sprintf("1.0.%d", round)
		var wg sync.WaitGroup
		created := make([]bool, racers)
		errs := make([]error, racers)
		start := make(chan struct{})
		for i := range racers {
			// Half the racers bring the same bytes as racer 0 or 1.
			digest := "sha256:" + strings.Repeat(fmt.Sprintf("%x", i%2), 64)
			if i >= racers/2 {
				digest = "sha256:" + strings.Repeat(fmt.Sprintf("%x", i), 64)
			}
			wg.Go(func() {
				<-start
				created[i], errs[i] = s.Bind(Binding{Name: "app", Version: version, Digest: digest, Size: 1})
			})
		}
		close(start)
		wg.Wait()
		got, err := s.Get("app", version)
		if err != nil {
			t.Fatal(err)
		}
		winners := 0
		for i := range racers {
			switch {
			case created[i]:
				winners++
			case errs[i] == nil:
				// Same bytes as the winner: idempotent.
			case errors.Is(errs[i], ErrConflict) && strings.Contains(errs[i].Error(), got.Digest):
			default:
				t.Errorf("%s racer %d: %v", version, i, errs[i])
			}
		}
		if winners != 1 {
			t.Errorf("%s: %d binds created, want exactly 1", version, winners)
		}
	}
}
