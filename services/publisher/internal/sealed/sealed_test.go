package sealed_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/custody-dev/custody/services/publisher/internal/blobstore/local"
	"github.com/custody-dev/custody/services/publisher/internal/kek"
	"github.com/custody-dev/custody/services/publisher/internal/kek/soft"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

const chunk = 4096

type fixture struct {
	dir   string
	kek   *soft.KEK
	store *sealed.Store
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	objects, err := local.New(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := soft.Open(filepath.Join(dir, "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := sealed.New(objects, k, slog.New(slog.DiscardHandler))
	s.SetChunk(chunk)
	return &fixture{dir: filepath.Join(dir, "store"), kek: k, store: s}
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func digestOf(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

func (f *fixture) put(t *testing.T, data []byte) string {
	t.Helper()
	d, n, err := f.store.Put(t.Context(), bytes.NewReader(data), 1<<30)
	if err != nil {
		t.Fatalf("Put %d bytes: %v", len(data), err)
	}
	if d != digestOf(data) || n != int64(len(data)) {
		t.Fatalf("Put = %s, %d; want the plaintext's SHA-256 %s and %d", d, n, digestOf(data), len(data))
	}
	return d
}

// readFrom returns what a read from offset released before it ended, and
// the error that ended it (nil at a clean end).
func (f *fixture) readFrom(t *testing.T, digest string, offset int64) ([]byte, error) {
	t.Helper()
	r, _, err := f.store.Open(t.Context(), digest, offset)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out bytes.Buffer
	_, err = io.CopyBuffer(&out, r, make([]byte, 1000)) // odd size: reads straddle chunks
	return out.Bytes(), err
}

// dataFile is the one ciphertext object in the store.
func (f *fixture) dataFile(t *testing.T) string {
	t.Helper()
	files := f.files(t, "data")
	if len(files) != 1 {
		t.Fatalf("%d ciphertext objects, want 1", len(files))
	}
	return files[0]
}

func (f *fixture) recordFile(t *testing.T, digest string) string {
	h := strings.TrimPrefix(digest, "sha256:")
	return filepath.Join(f.dir, "objects", "keys", "sha256", h[:2], h)
}

func (f *fixture) files(t *testing.T, under string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(filepath.Join(f.dir, "objects", under), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	return files
}

func TestRoundTripFromEveryKindOfOffset(t *testing.T) {
	f := newFixture(t)
	for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 3*chunk + 5, 4 * chunk} {
		data := random(size)
		d := f.put(t, data)
		for _, off := range []int{0, 1, chunk - 1, chunk, chunk + 1, size / 2, size - 1, size} {
			if off < 0 || off > size {
				continue
			}
			got, err := f.readFrom(t, d, int64(off))
			if err != nil || !bytes.Equal(got, data[off:]) {
				t.Fatalf("size %d, offset %d: read %d bytes, %v; want %d bytes", size, off, len(got), err, size-off)
			}
		}
		if n, err := f.store.Verify(t.Context(), d); err != nil || n != int64(size) {
			t.Fatalf("Verify size %d = %d, %v", size, n, err)
		}
		if _, _, err := f.store.Open(t.Context(), d, int64(size)+1); !errors.Is(err, sealed.ErrInvalid) {
			t.Fatalf("Open past the end: %v, want ErrInvalid", err)
		}
	}
}

func TestNoPlaintextWindowAtRest(t *testing.T) {
	f := newFixture(t)
	data := random(64*chunk + 100)
	f.put(t, data)
	// Index every 64-byte window of the artifact by its first 8 bytes.
	const w = 64
	windows := make(map[uint64][]int, len(data))
	for i := 0; i+w <= len(data); i++ {
		k := binary.LittleEndian.Uint64(data[i:])
		windows[k] = append(windows[k], i)
	}
	var scanned int
	filepath.WalkDir(filepath.Dir(f.dir), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		scanned += len(b)
		for j := 0; j+w <= len(b); j++ {
			for _, i := range windows[binary.LittleEndian.Uint64(b[j:])] {
				if bytes.Equal(b[j:j+w], data[i:i+w]) {
					t.Fatalf("%s holds plaintext bytes %d-%d of the artifact at offset %d", p, i, i+w, j)
				}
			}
		}
		return nil
	})
	if scanned < len(data) {
		t.Fatalf("scanned %d bytes at rest, less than the %d-byte artifact: the walk missed the store", scanned, len(data))
	}
	// The check above can fail: the same scan finds a plaintext copy.
	if err := os.WriteFile(filepath.Join(f.dir, "plain"), data[100:300], 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(f.dir, "plain"))
	if !bytes.Contains(data, b[:w]) {
		t.Fatal("control: the scan's input is wrong")
	}
}

func TestTamperedCiphertextIsNeverServed(t *testing.T) {
	size := 5*chunk + 123
	const sealedChunk = chunk + 16
	for _, tc := range []struct {
		name string
		pos  int // byte to flip in the ciphertext object
	}{
		{"first byte", 0},
		{"tag of chunk 0", chunk + 3},
		{"middle of chunk 2", 2*sealedChunk + 100},
		{"last byte", 5*sealedChunk + 123 + 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			data := random(size)
			d := f.put(t, data)
			path := f.dataFile(t)
			b, _ := os.ReadFile(path)
			b[tc.pos] ^= 0x01
			os.WriteFile(path, b, 0o600)
			bad := tc.pos / sealedChunk
			for _, off := range []int{0, bad * chunk, bad*chunk + 7} {
				got, err := f.readFrom(t, d, int64(off))
				if !errors.Is(err, sealed.ErrIntegrity) || !strings.Contains(err.Error(), d) {
					t.Fatalf("read from %d: %v; want an integrity error naming %s", off, err, d)
				}
				// Only whole authenticated chunks before the bad one.
				if want := max(0, bad*chunk-off); len(got) != want || !bytes.Equal(got, data[off:off+len(got)]) {
					t.Fatalf("read from %d released %d bytes before failing, want the %d before chunk %d", off, len(got), want, bad)
				}
			}
			if _, err := f.store.Verify(t.Context(), d); !errors.Is(err, sealed.ErrIntegrity) {
				t.Fatalf("Verify: %v, want ErrIntegrity", err)
			}
		})
	}
}

func TestTruncatedExtendedReorderedCiphertext(t *testing.T) {
	const sealedChunk = chunk + 16
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
	}{
		{"last chunk dropped", func(b []byte) []byte { return b[:4*sealedChunk] }},
		{"one byte short", func(b []byte) []byte { return b[:len(b)-1] }},
		{"one byte more", func(b []byte) []byte { return append(b, 0) }},
		{"chunks 1 and 2 swapped", func(b []byte) []byte {
			out := append([]byte(nil), b...)
			copy(out[sealedChunk:], b[2*sealedChunk:3*sealedChunk])
			copy(out[2*sealedChunk:], b[sealedChunk:2*sealedChunk])
			return out
		}},
		{"empty", func([]byte) []byte { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			data := random(4*chunk + 10)
			d := f.put(t, data)
			path := f.dataFile(t)
			b, _ := os.ReadFile(path)
			os.WriteFile(path, tc.change(b), 0o600)
			got, err := f.readFrom(t, d, 0)
			if !errors.Is(err, sealed.ErrIntegrity) || !strings.Contains(err.Error(), d) {
				t.Fatalf("read: %v; want an integrity error naming %s", err, d)
			}
			if len(got) > sealedChunk && tc.name != "chunks 1 and 2 swapped" {
				t.Fatalf("released %d bytes of a blob of the wrong size", len(got))
			}
		})
	}
}

func TestTamperedRecordFailsEveryRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(map[string]any, *fixture)
	}{
		{"size shrunk", func(r map[string]any, _ *fixture) { r["size"] = r["size"].(float64) - 1 }},
		{"chunk size changed", func(r map[string]any, _ *fixture) { r["chunk"] = 8192.0 }},
		{"tag flipped", func(r map[string]any, _ *fixture) { r["tag"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" }},
		{"wrapped key corrupted", func(r map[string]any, _ *fixture) {
			w := []byte(r["wrapped"].(string))
			w[len(w)-3] ^= 1
			r["wrapped"] = string(w)
		}},
		{"unknown field", func(r map[string]any, _ *fixture) { r["extra"] = 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			data := random(2*chunk + 1)
			d := f.put(t, data)
			path := f.recordFile(t, d)
			b, _ := os.ReadFile(path)
			var r map[string]any
			json.Unmarshal(b, &r)
			tc.change(r, f)
			b, _ = json.Marshal(r)
			os.WriteFile(path, b, 0o600)
			for _, off := range []int64{0, chunk, 2 * chunk} {
				if got, err := f.readFrom(t, d, off); !errors.Is(err, sealed.ErrIntegrity) || len(got) > 0 || !strings.Contains(err.Error(), d) {
					t.Fatalf("read from %d: %d bytes, %v; want nothing and an integrity error naming %s", off, len(got), err, d)
				}
			}
		})
	}
}

func TestSwappedBlobsAreDetected(t *testing.T) {
	f := newFixture(t)
	a, b := random(3*chunk), random(3*chunk)
	da, db := f.put(t, a), f.put(t, b)
	ra, _ := os.ReadFile(f.recordFile(t, da))
	rb, _ := os.ReadFile(f.recordFile(t, db))

	// b's record under a's name: it names b, not a.
	os.WriteFile(f.recordFile(t, da), rb, 0o600)
	if _, err := f.readFrom(t, da, 0); !errors.Is(err, sealed.ErrIntegrity) {
		t.Fatalf("another blob's record: %v, want ErrIntegrity", err)
	}
	// b's record with a's digest and tag: the tag does not verify.
	var recA, recB map[string]any
	json.Unmarshal(ra, &recA)
	json.Unmarshal(rb, &recB)
	recB["digest"], recB["tag"] = recA["digest"], recA["tag"]
	forged, _ := json.Marshal(recB)
	os.WriteFile(f.recordFile(t, da), forged, 0o600)
	if _, err := f.readFrom(t, da, 0); !errors.Is(err, sealed.ErrIntegrity) {
		t.Fatalf("forged record: %v, want ErrIntegrity", err)
	}
	// a's record pointing at b's ciphertext: the key does not open it.
	recA["data"] = recB["data"]
	os.WriteFile(f.recordFile(t, da), ra, 0o600)
	pathA := filepath.Join(f.dir, "objects", filepath.FromSlash(recA["data"].(string)))
	_ = pathA
	dataA := filepath.Join(f.dir, "objects", filepath.FromSlash(func() string {
		var r map[string]any
		json.Unmarshal(ra, &r)
		return r["data"].(string)
	}()))
	ctB, _ := os.ReadFile(filepath.Join(f.dir, "objects", filepath.FromSlash(recB["data"].(string))))
	os.WriteFile(dataA, ctB, 0o600)
	if got, err := f.readFrom(t, da, 0); !errors.Is(err, sealed.ErrIntegrity) || len(got) > 0 {
		t.Fatalf("another blob's ciphertext: %d bytes, %v; want nothing and ErrIntegrity", len(got), err)
	}
}

func TestDuplicateUploadKeepsOneCopy(t *testing.T) {
	f := newFixture(t)
	data := random(chunk * 2)
	d := f.put(t, data)
	if d2 := f.put(t, data); d2 != d {
		t.Fatalf("second Put = %s, want %s", d2, d)
	}
	if n := len(f.files(t, "data")); n != 1 {
		t.Fatalf("%d ciphertext objects after a duplicate upload, want 1", n)
	}
	if got, err := f.readFrom(t, d, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after duplicate: %v", err)
	}
}

func TestTooLargeLeavesNothing(t *testing.T) {
	f := newFixture(t)
	if _, _, err := f.store.Put(t.Context(), bytes.NewReader(random(3*chunk)), 2*chunk); !errors.Is(err, sealed.ErrTooLarge) {
		t.Fatalf("Put over the limit: %v, want ErrTooLarge", err)
	}
	if files := append(f.files(t, "data"), f.files(t, "keys")...); len(files) != 0 {
		t.Fatalf("a refused upload left %v", files)
	}
}

func TestRewrapRetiresTheOldKEKVersion(t *testing.T) {
	f := newFixture(t)
	blobs := map[string][]byte{}
	for i := range 5 {
		data := random(i*chunk + i)
		blobs[f.put(t, data)] = data
	}
	if err := f.kek.Rotate(); err != nil {
		t.Fatal(err)
	}
	res, err := f.store.Rewrap(t.Context())
	if err != nil || res.Rewrapped != 5 || res.Failed != 0 {
		t.Fatalf("Rewrap = %+v, %v; want 5 rewrapped", res, err)
	}
	before := map[string][]byte{}
	for _, p := range f.files(t, "data") {
		before[p], _ = os.ReadFile(p)
	}
	if err := f.kek.Forget(); err != nil { // version 1 is gone
		t.Fatal(err)
	}
	for d, data := range blobs {
		if got, err := f.readFrom(t, d, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %s after rewrap without the old KEK version: %v", d, err)
		}
	}
	for p, b := range before {
		if now, _ := os.ReadFile(p); !bytes.Equal(now, b) {
			t.Fatalf("rewrap re-encrypted %s", p)
		}
	}
	// Without the rewrap the same step fails: a key still under a
	// forgotten version cannot be read.
	d := f.put(t, random(10))
	f.kek.Rotate()
	f.kek.Forget()
	if _, err := f.readFrom(t, d, 0); !errors.Is(err, sealed.ErrIntegrity) {
		t.Fatalf("read of a key under a forgotten version: %v, want ErrIntegrity", err)
	}
}

// downKEK is a KEK whose back end can be switched off.
type downKEK struct {
	sealed.KEK
	down atomic.Bool
}

func (k *downKEK) Wrap(ctx context.Context, dk []byte) (string, error) {
	if k.down.Load() {
		return "", fmt.Errorf("test back end: %w", kek.ErrUnavailable)
	}
	return k.KEK.Wrap(ctx, dk)
}

func (k *downKEK) Unwrap(ctx context.Context, w string) ([]byte, error) {
	if k.down.Load() {
		return nil, fmt.Errorf("test back end: %w", kek.ErrUnavailable)
	}
	return k.KEK.Unwrap(ctx, w)
}

func TestKEKDownFailsClosedAndResumes(t *testing.T) {
	f := newFixture(t)
	k := &downKEK{KEK: f.kek}
	objects, _ := local.New(f.dir)
	s := sealed.New(objects, k, slog.New(slog.DiscardHandler))
	data := random(chunk)
	d, _, err := s.Put(t.Context(), bytes.NewReader(data), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	k.down.Store(true)
	var read int
	if _, _, err := s.Put(t.Context(), &countingReader{r: bytes.NewReader(random(10)), n: &read}, 1<<20); !errors.Is(err, sealed.ErrUnavailable) || !strings.Contains(err.Error(), "soft KEK") {
		t.Fatalf("Put with the KEK down: %v, want ErrUnavailable naming the back end", err)
	}
	if read != 0 {
		t.Fatalf("Put read %d bytes of the upload with the KEK down", read)
	}
	if _, _, err := s.Open(t.Context(), d, 0); !errors.Is(err, sealed.ErrUnavailable) {
		t.Fatalf("Open with the KEK down: %v, want ErrUnavailable", err)
	}
	k.down.Store(false)
	if r, _, err := s.Open(t.Context(), d, 0); err != nil {
		t.Fatalf("Open after the KEK returned: %v", err)
	} else {
		r.Close()
	}
}

type countingReader struct {
	r io.Reader
	n *int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += n
	return n, err
}

func TestHostileDigestsRefused(t *testing.T) {
	f := newFixture(t)
	for _, d := range []string{"", "sha256:", "sha256:../../etc/passwd", "sha256:" + strings.Repeat("A", 64), "md5:" + strings.Repeat("0", 32), "sha256:" + strings.Repeat("0", 63)} {
		if _, _, err := f.store.Open(t.Context(), d, 0); !errors.Is(err, sealed.ErrInvalid) {
			t.Errorf("Open(%q): %v, want ErrInvalid", d, err)
		}
	}
	if _, _, err := f.store.Open(t.Context(), "sha256:"+strings.Repeat("0", 64), 0); !errors.Is(err, sealed.ErrNotFound) {
		t.Errorf("Open of a missing blob: %v, want ErrNotFound", err)
	}
}
