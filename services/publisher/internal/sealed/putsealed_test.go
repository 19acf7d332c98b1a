package sealed_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/custody-dev/custody/services/publisher/internal/blobstore"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/local"
	"github.com/custody-dev/custody/services/publisher/internal/kek/soft"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

// sealFile seals data as a resumable upload does: under a fresh data key
// wrapped by k, in the store's format, into a file.
func sealFile(t *testing.T, dir string, k *soft.KEK, data []byte) sealed.Sealed {
	t.Helper()
	dk := make([]byte, sealed.DataKeySize)
	rand.Read(dk)
	wrapped, err := k.Wrap(t.Context(), dk)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sealed.ContentCipher(dk, sealed.DefaultChunk)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := io.ReadAll(c.Sealer(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "partial")
	if err := os.WriteFile(p, ct, 0o600); err != nil {
		t.Fatal(err)
	}
	return sealed.Sealed{Path: p, DataKey: dk, Wrapped: wrapped, Chunk: sealed.DefaultChunk, Digest: digestOf(data), Size: int64(len(data))}
}

// noLink hides the local back end's Link, as a back end that cannot link
// (S3) does.
type noLink struct{ blobstore.Backend }

// TestPutSealedStoresTheFileAsIs: a blob sealed by its writer is stored
// by linking its file (no byte copied) or, where the back end cannot link,
// by writing it; either way it reads back and verifies, and a file that
// is not what it claims, or under another KEK's key, stores nothing.
func TestPutSealedStoresTheFileAsIs(t *testing.T) {
	data := random(3*sealed.DefaultChunk + 77)
	for _, linked := range []bool{true, false} {
		f := newFixture(t)
		store := f.store
		if !linked {
			store = sealed.New(noLink{mustLocal(t, f.dir)}, f.kek, slog.New(slog.DiscardHandler))
		}
		b := sealFile(t, t.TempDir(), f.kek, data)
		d, n, err := store.PutSealed(t.Context(), b)
		if err != nil || d != digestOf(data) || n != int64(len(data)) {
			t.Fatalf("linked %v: PutSealed = %s %d %v", linked, d, n, err)
		}
		if got, err := f.readFrom(t, d, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("linked %v: read back: %v", linked, err)
		}
		if _, err := store.Verify(t.Context(), d); err != nil {
			t.Fatalf("linked %v: verify: %v", linked, err)
		}
		obj, _ := os.Stat(f.dataFile(t))
		src, _ := os.Stat(b.Path)
		if os.SameFile(obj, src) != linked {
			t.Errorf("linked %v: the object is the partial file: %v", linked, os.SameFile(obj, src))
		}
	}

	f := newFixture(t)
	other, err := soft.Open(filepath.Join(t.TempDir(), "other-kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*sealed.Sealed){
		"size claimed larger":     func(b *sealed.Sealed) { b.Size++ },
		"chunk size out of range": func(b *sealed.Sealed) { b.Chunk = 1 },
		"bad digest":              func(b *sealed.Sealed) { b.Digest = "sha256:xyz" },
		"key of another KEK": func(b *sealed.Sealed) {
			b.Wrapped, _ = other.Wrap(t.Context(), b.DataKey)
		},
		"another data key": func(b *sealed.Sealed) { b.DataKey = bytes.Repeat([]byte{1}, sealed.DataKeySize) },
		"file missing":     func(b *sealed.Sealed) { os.Remove(b.Path) },
	} {
		b := sealFile(t, t.TempDir(), f.kek, data)
		edit(&b)
		if _, _, err := f.store.PutSealed(t.Context(), b); err == nil {
			t.Errorf("%s: stored", name)
		}
		if files := f.files(t, ""); len(files) != 0 {
			t.Fatalf("%s: left %v", name, files)
		}
	}
	// The KEK down: nothing stored, the error says so.
	b := sealFile(t, t.TempDir(), f.kek, data)
	k := &downKEK{KEK: f.kek}
	k.down.Store(true)
	down := sealed.New(mustLocal(t, f.dir), k, slog.New(slog.DiscardHandler))
	if _, _, err := down.PutSealed(t.Context(), b); !errors.Is(err, sealed.ErrUnavailable) {
		t.Fatalf("KEK down: %v, want ErrUnavailable", err)
	}
	if files := f.files(t, ""); len(files) != 0 {
		t.Fatalf("KEK down: left %v", files)
	}
}

func mustLocal(t *testing.T, dir string) *local.Store {
	t.Helper()
	s, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
