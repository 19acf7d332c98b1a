package sweep_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/services/publisher/internal/bindings"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/local"
	"github.com/custody-dev/custody/services/publisher/internal/kek/soft"
	"github.com/custody-dev/custody/services/publisher/internal/retention"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
	"github.com/custody-dev/custody/services/publisher/internal/sweep"
)

func count(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// TestSweepCollectsOrphans: an orphaned ciphertext (a crash between
// writing it and its record), an unbound blob (a crash between storing and
// binding) and old temporary files are collected once found twice an age
// apart; bound blobs, fresh orphans, fresh temp files and damaged records
// are left.
func TestSweepCollectsOrphans(t *testing.T) {
	dir := t.TempDir()
	objects, err := local.New(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := soft.Open(filepath.Join(dir, "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	blobs := sealed.New(objects, k, slog.New(slog.DiscardHandler))
	binds, err := bindings.Open(filepath.Join(dir, "bindings"))
	if err != nil {
		t.Fatal(err)
	}
	runner, err := retention.New(retention.Config{Blobs: blobs, Bindings: binds, JournalDir: filepath.Join(dir, "retention"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	tmpDirs := []string{filepath.Join(dir, "blobs", "tmp"), filepath.Join(dir, "bindings", "tmp")}
	s := sweep.New(sweep.Config{Blobs: blobs, Bindings: binds, Exclude: runner, TempDirs: tmpDirs, Age: time.Hour,
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }})

	kept, size, err := blobs.Put(t.Context(), strings.NewReader("bound"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := binds.Bind(bindings.Binding{Name: "app", Version: "1", Digest: kept, Size: size}); err != nil {
		t.Fatal(err)
	}
	unbound, _, err := blobs.Put(t.Context(), strings.NewReader("never bound"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objects.Write(t.Context(), "data/ab/"+strings.Repeat("ab", 16), strings.NewReader("ciphertext without a record")); err != nil {
		t.Fatal(err)
	}
	damaged := "keys/sha256/cd/" + strings.Repeat("cd", 32)
	if err := objects.Create(t.Context(), damaged, []byte("{not a record")); err != nil {
		t.Fatal(err)
	}
	for _, d := range tmpDirs {
		old := filepath.Join(d, "write-old")
		if err := os.WriteFile(old, []byte("aborted"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(old, now.Add(-2*time.Hour), now.Add(-2*time.Hour))
		if err := os.WriteFile(filepath.Join(d, "write-fresh"), []byte("in flight"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(filepath.Join(d, "write-fresh"), now, now)
	}
	dataDir := filepath.Join(dir, "blobs", "objects", "data")
	if n := count(t, dataDir); n != 3 {
		t.Fatalf("%d ciphertext objects before, want 3", n)
	}

	// First sweep: temp files by age; the orphans are only noted.
	res, err := s.Sweep(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.TempFiles != 2 || res.Blobs != 0 || res.Ciphertexts != 0 || res.Pending != 2 {
		t.Fatalf("first sweep %+v", res)
	}
	for _, d := range tmpDirs {
		if _, err := os.Stat(filepath.Join(d, "write-fresh")); err != nil {
			t.Errorf("fresh temp file removed: %v", err)
		}
	}
	// Not yet an age later: still nothing.
	now = now.Add(30 * time.Minute)
	if res, err := s.Sweep(t.Context()); err != nil || res.Pending != 2 || res.Blobs+res.Ciphertexts != 0 {
		t.Fatalf("sweep before the age: %+v %v", res, err)
	}
	now = now.Add(31 * time.Minute)
	res, err = s.Sweep(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.Blobs != 1 || res.Ciphertexts != 1 || res.Pending != 0 {
		t.Fatalf("sweep after the age %+v", res)
	}
	if _, err := blobs.Verify(t.Context(), kept); err != nil {
		t.Fatalf("bound blob: %v", err)
	}
	if _, err := blobs.Locate(t.Context(), unbound); err == nil {
		t.Fatal("unbound blob's record survived")
	}
	if n := count(t, dataDir); n != 1 {
		t.Fatalf("%d ciphertext objects after, want 1 (the bound blob's)", n)
	}
	if _, err := objects.Get(t.Context(), damaged); err != nil {
		t.Fatalf("damaged record collected: %v", err)
	}
}

// TestSweepSparesWhatIsBoundMeanwhile: an unbound blob that an upload
// binds between two sweeps is not collected.
func TestSweepSparesWhatIsBoundMeanwhile(t *testing.T) {
	dir := t.TempDir()
	objects, _ := local.New(filepath.Join(dir, "blobs"))
	k, _ := soft.Open(filepath.Join(dir, "kek.json"))
	blobs := sealed.New(objects, k, slog.New(slog.DiscardHandler))
	binds, _ := bindings.Open(filepath.Join(dir, "bindings"))
	runner, err := retention.New(retention.Config{Blobs: blobs, Bindings: binds, JournalDir: filepath.Join(dir, "retention"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s := sweep.New(sweep.Config{Blobs: blobs, Bindings: binds, Exclude: runner, Age: time.Hour, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }})
	d, size, err := blobs.Put(t.Context(), strings.NewReader("late bind"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := s.Sweep(t.Context()); err != nil || res.Pending != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	if err := runner.BindStored(t.Context(), d, func() error {
		_, err := binds.Bind(bindings.Binding{Name: "app", Version: "1", Digest: d, Size: size})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	if res, err := s.Sweep(t.Context()); err != nil || res.Blobs != 0 || res.Pending != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := blobs.Verify(t.Context(), d); err != nil {
		t.Fatal(err)
	}
}
