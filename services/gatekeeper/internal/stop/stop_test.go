package stop

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

func open(t testing.TB, file string, log Logger) (*Store, error) {
	return Open(Config{File: file, Quorum: map[string]int{"prod": 2}, DefaultQuorum: 1, KillSwitchQuorum: 2,
		Log: log, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
}

// TestEpochOrdersAgainstReaders: a reader that took its time before
// reading the state and saw no stop has a time before the stop's epoch.
func TestEpochOrdersAgainstReaders(t *testing.T) {
	s, err := open(t, filepath.Join(t.TempDir(), "s.json"), &memLog{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var mu sync.Mutex
	var unstopped []time.Time
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				at := time.Now()
				if len(s.Denials("prod")) == 0 {
					mu.Lock()
					unstopped = append(unstopped, at)
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(10 * time.Millisecond)
	res, err := s.On(t.Context(), "prod", "race", "spiffe://t/admin/a")
	if err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	epoch := res.State.Pauses["prod"].EpochTime
	for _, at := range unstopped {
		if !at.Before(epoch) {
			t.Fatalf("a reader at %s saw no stop, but the epoch is %s", at, epoch)
		}
	}
}

func TestOnRequiresAValidTargetAndEpochsOnlyMoveForward(t *testing.T) {
	log := &memLog{}
	fixed := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	s, err := Open(Config{File: filepath.Join(t.TempDir(), "s.json"), DefaultQuorum: 1, KillSwitchQuorum: 1, Log: log,
		Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(), Now: func() time.Time { return fixed }})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.On(t.Context(), KillSwitch, "one", "spiffe://t/admin/a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.On(t.Context(), KillSwitch, "two", "spiffe://t/admin/a")
	if err != nil {
		t.Fatal(err)
	}
	if !b.State.KillSwitch.EpochTime.After(a.State.KillSwitch.EpochTime) || b.State.KillSwitch.Epoch != 2 {
		t.Fatalf("epochs did not move forward with a stuck clock: %+v then %+v", a.State.KillSwitch, b.State.KillSwitch)
	}
	if _, err := s.On(t.Context(), "Bad Env", "x", "spiffe://t/admin/a"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad environment: %v", err)
	}
	if _, err := s.Approve(t.Context(), "staging", "spiffe://t/admin/a"); !errors.Is(err, ErrNotActive) {
		t.Fatalf("approve of nothing: %v", err)
	}
}

// FuzzOpen: the state file is read at start; garbage is refused, never
// half-loaded, and whatever loads survives a write and a re-read.
func FuzzOpen(f *testing.F) {
	f.Add([]byte(`{"kill_switch":{"active":true,"epoch":1,"epoch_time":"2026-12-02T12:00:00Z","reason":"x","by":"a","approvals":null,"lifted_at":"0001-01-01T00:00:00Z"},"pauses":{}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"pauses":{"prod":{"active":true}}}`))
	f.Add([]byte(`{"kill_switch":{"active":true},"extra":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		file := filepath.Join(dir, "s.json")
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := open(t, file, &memLog{})
		if err != nil {
			return
		}
		st := s.State()
		if err := s.persist(st); err != nil {
			t.Fatal(err)
		}
		s2, err := open(t, file, &memLog{})
		if err != nil {
			t.Fatalf("a state that loaded does not load after a write: %v", err)
		}
		if s2.State().KillSwitch.Active != st.KillSwitch.Active || len(s2.State().Pauses) != len(st.Pauses) {
			t.Fatal("state changed across a write and a re-read")
		}
	})
}
