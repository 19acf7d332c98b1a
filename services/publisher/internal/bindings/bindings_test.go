package bindings

import (
	"errors"
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
