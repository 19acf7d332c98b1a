package issued

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	d3 = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func readFile(t *testing.T, path string) map[string]time.Time {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Time{}
	for _, e := range entries {
		out[e.Digest] = e.LastIssued
	}
	return out
}

// TestNoteWritesNewDigestsAtOnceAndTimesOnFlush: a new digest is in the
// file when Note returns; a second issuance only moves its time in memory
// until Flush; a reopened record has both.
func TestNoteWritesNewDigestsAtOnceAndTimesOnFlush(t *testing.T) {
	c := &clock{time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "issued-digests.json")
	r, err := Open(Config{Path: path, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Note(t.Context(), d1); err != nil {
		t.Fatal(err)
	}
	t0 := c.t
	if diff := cmp.Diff(map[string]time.Time{d1: t0}, readFile(t, path)); diff != "" {
		t.Fatalf("file after the first issuance (-want +got):\n%s", diff)
	}
	c.t = c.t.Add(time.Hour)
	if err := r.Note(t.Context(), d1); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path)[d1]; !got.Equal(t0) {
		t.Fatalf("a known digest's time was written at once: %s", got)
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path)[d1]; !got.Equal(c.t) {
		t.Fatalf("after Flush the time is %s, want %s", got, c.t)
	}
	r2, err := Open(Config{Path: path, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{d1}, r2.Digests()); diff != "" {
		t.Fatalf("reopened (-want +got):\n%s", diff)
	}
	if err := r.Note(t.Context(), "sha256:ABC"); err == nil {
		t.Fatal("a malformed digest was recorded")
	}
}

// TestRetentionAndBound: entries past the retention are not returned and
// leave the file on the next write; at the bound the oldest is dropped and
// counted.
func TestRetentionAndBound(t *testing.T) {
	c := &clock{time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "issued-digests.json")
	reg := prometheus.NewRegistry()
	r, err := Open(Config{Path: path, Now: c.now, Retention: 48 * time.Hour, Max: 2, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{d1, d2} {
		if err := r.Note(t.Context(), d); err != nil {
			t.Fatal(err)
		}
		c.t = c.t.Add(time.Hour)
	}
	if err := r.Note(t.Context(), d3); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{d2, d3}, r.Digests()); diff != "" {
		t.Fatalf("at the bound (-want +got):\n%s", diff)
	}
	if n := testutil.ToFloat64(r.dropped); n != 1 {
		t.Fatalf("dropped counter %v, want 1", n)
	}
	if n := testutil.ToFloat64(r.gauge); n != 2 {
		t.Fatalf("gauge %v, want 2", n)
	}
	if _, ok := readFile(t, path)[d1]; ok {
		t.Fatal("the dropped digest is still in the file")
	}
	c.t = c.t.Add(47*time.Hour + time.Minute) // d2 is 48h01 old, d3 47h01
	if diff := cmp.Diff([]string{d3}, r.Digests()); diff != "" {
		t.Fatalf("after the retention (-want +got):\n%s", diff)
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]time.Time{d3: time.Date(2027, 1, 1, 2, 0, 0, 0, time.UTC)}, readFile(t, path)); diff != "" {
		t.Fatalf("file after the retention (-want +got):\n%s", diff)
	}
	if n := testutil.ToFloat64(r.dropped); n != 1 {
		t.Fatalf("expiry counted as a drop: %v", n)
	}
	// An expired digest issued again is new: written at once.
	if err := r.Note(t.Context(), d1); err != nil {
		t.Fatal(err)
	}
	if _, ok := readFile(t, path)[d1]; !ok {
		t.Fatal("a digest issued again after its retention is not in the file")
	}
	// A smaller bound at start drops the oldest and counts them.
	reg2 := prometheus.NewRegistry()
	r2, err := Open(Config{Path: path, Now: c.now, Retention: 48 * time.Hour, Max: 1, Registerer: reg2})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{d1}, r2.Digests()); diff != "" {
		t.Fatalf("reopened with a smaller bound (-want +got):\n%s", diff)
	}
	if n := testutil.ToFloat64(r2.dropped); n != 1 {
		t.Fatalf("dropped at start %v, want 1", n)
	}
}

// TestNoteFailsClosed: a record that cannot be written refuses a new
// digest and keeps nothing of it.
func TestNoteFailsClosed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gone", "issued-digests.json")
	r, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Note(t.Context(), d1)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Note = %v, want ErrUnavailable naming %s", err, path)
	}
	if got := r.Digests(); len(got) != 0 {
		t.Fatalf("a digest not written is recorded: %v", got)
	}
}

// TestOpenRefusesDamagedFiles: a file that is not a valid record stops
// the broker, naming the file and what to do.
func TestOpenRefusesDamagedFiles(t *testing.T) {
	for name, body := range map[string]string{
		"truncated":     `{"version":1,"digests":[{"digest":"` + d1,
		"not JSON":      "\x00\x01",
		"unknown key":   `{"version":1,"digests":[],"tokens":["x"]}`,
		"version":       `{"version":2,"digests":[]}`,
		"no version":    `{"digests":[]}`,
		"bad digest":    `{"version":1,"digests":[{"digest":"sha256:ABC","last_issued":"2027-01-01T00:00:00Z"}]}`,
		"upper case":    `{"version":1,"digests":[{"digest":"` + strings.ToUpper(d1) + `","last_issued":"2027-01-01T00:00:00Z"}]}`,
		"twice":         `{"version":1,"digests":[{"digest":"` + d1 + `","last_issued":"2027-01-01T00:00:00Z"},{"digest":"` + d1 + `","last_issued":"2027-01-01T00:00:00Z"}]}`,
		"no time":       `{"version":1,"digests":[{"digest":"` + d1 + `"}]}`,
		"repeated key":  `{"version":1,"version":1,"digests":[]}`,
		"trailing data": `{"version":1,"digests":[]} {}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "issued-digests.json")
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(Config{Path: path})
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), "restore it from a backup") {
				t.Fatalf("Open = %v, want a damaged-file error naming %s", err, path)
			}
		})
	}
}

// FuzzParse: Parse never panics, and what it accepts is a valid record
// that survives a round trip.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"digests":[{"digest":"` + d1 + `","last_issued":"2027-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"digests":[]}`))
	f.Add([]byte(`{"version":1,"digests":null}`))
	f.Add([]byte(`{"version":1,"digests":[{"digest":"` + d1 + `","last_issued":"0001-01-01T00:00:00Z"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := Parse(b)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, e := range entries {
			if len(e.Digest) != 71 || !strings.HasPrefix(e.Digest, "sha256:") || seen[e.Digest] || e.LastIssued.IsZero() {
				t.Fatalf("accepted entry %+v", e)
			}
			seen[e.Digest] = true
		}
		again, err := json.Marshal(file{Version: version, Digests: entries})
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(again)
		if err != nil {
			t.Fatalf("round trip of %q: %v", again, err)
		}
		if len(back) != len(entries) {
			t.Fatalf("round trip changed %d entries into %d", len(entries), len(back))
		}
	})
}

// BenchmarkNoteNewAtBound: a first issuance with the record at its default
// bound rewrites the whole file (decision 0123's cost on the request path).
func BenchmarkNoteNewAtBound(b *testing.B) {
	c := &clock{time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	path := filepath.Join(b.TempDir(), "issued-digests.json")
	r, err := Open(Config{Path: path, Now: c.now})
	if err != nil {
		b.Fatal(err)
	}
	for i := range DefaultMax {
		r.last[fmt.Sprintf("sha256:%064x", i)] = c.t.Add(-time.Duration(i) * time.Second)
	}
	for i := 0; b.Loop(); i++ {
		if err := r.Note(b.Context(), fmt.Sprintf("sha256:%064x", DefaultMax+i)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if st, err := os.Stat(path); err == nil {
		b.ReportMetric(float64(st.Size())/1e6, "MB/file")
	}
}

// TestWritesDoNotHoldUpKnownDigests: while the file is being written (a
// Flush, or a new digest's Note), a Note of a recorded digest returns at
// once; a second Note of the digest being written waits for that write and
// fails with it, so no request learns of a digest the file may not hold.
func TestWritesDoNotHoldUpKnownDigests(t *testing.T) {
	c := &clock{time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	r, err := Open(Config{Path: filepath.Join(t.TempDir(), "issued-digests.json"), Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Note(t.Context(), d1); err != nil {
		t.Fatal(err)
	}
	writing, release := make(chan struct{}), make(chan error)
	r.write = func(string, []byte) error {
		writing <- struct{}{}
		return <-release
	}
	within := func(what string, f func() error) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatalf("%s waited for the write in progress", what)
			return nil
		}
	}

	// A Flush is writing: d1 is noted without waiting.
	c.t = c.t.Add(time.Minute)
	r.dirty = true
	flushed := make(chan error, 1)
	go func() { flushed <- r.Flush() }()
	<-writing
	if err := within("a Note of a recorded digest during a Flush", func() error { return r.Note(t.Context(), d1) }); err != nil {
		t.Fatal(err)
	}
	release <- nil
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}

	// A new digest's Note is writing: d1 again without waiting; the same
	// new digest waits, and both fail when the write fails.
	first := make(chan error, 1)
	go func() { first <- r.Note(t.Context(), d2) }()
	<-writing
	if err := within("a Note of a recorded digest during a new digest's write", func() error { return r.Note(t.Context(), d1) }); err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() { second <- r.Note(t.Context(), d2) }()
	select {
	case err := <-second:
		t.Fatalf("a second Note of the digest being written returned %v before the write ended", err)
	case <-time.After(100 * time.Millisecond):
	}
	release <- errors.New("disk gone")
	if err := <-first; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("first Note of d2 = %v, want ErrUnavailable", err)
	}
	// The second Note now writes itself, and fails the same way.
	<-writing
	release <- errors.New("disk gone")
	if err := <-second; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("second Note of d2 = %v, want ErrUnavailable", err)
	}
	if got := r.Digests(); !cmp.Equal(got, []string{d1}) {
		t.Fatalf("digests %v, want only %s", got, d1)
	}
}
