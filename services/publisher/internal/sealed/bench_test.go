package sealed_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/custody-dev/custody/services/publisher/internal/blobstore"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/local"
	"github.com/custody-dev/custody/services/publisher/internal/kek/soft"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

func newLocal(dir string) (blobstore.Backend, error) { return local.New(dir) }

const benchSize = 64 << 20

// BenchmarkRaw is the machine's limit in the same run: SHA-256 and
// AES-256-GCM over the same bytes on one core.
func BenchmarkRaw(b *testing.B) {
	data := random(sealed.DefaultChunk)
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			sha256.Sum256(data)
		}
	})
	b.Run("aes-256-gcm", func(b *testing.B) {
		block, _ := aes.NewCipher(make([]byte, 32))
		aead, _ := cipher.NewGCM(block)
		out := make([]byte, 0, len(data)+16)
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			aead.Seal(out[:0], make([]byte, 12), data, nil)
		}
	})
}

// BenchmarkSealed puts and reads a 64 MiB artifact through the encrypted
// store on a local back end in a temporary directory (page cache; fsync
// included on put).
func BenchmarkSealed(b *testing.B) {
	dir := b.TempDir()
	objects, err := newLocal(filepath.Join(dir, "store"))
	if err != nil {
		b.Fatal(err)
	}
	k, err := soft.Open(filepath.Join(dir, "kek.json"))
	if err != nil {
		b.Fatal(err)
	}
	s := sealed.New(objects, k, slog.New(slog.DiscardHandler))
	data := random(benchSize)
	digest, _, err := s.Put(b.Context(), bytes.NewReader(data), 1<<40)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("open", func(b *testing.B) {
		buf := make([]byte, 1<<20)
		b.SetBytes(benchSize)
		b.ReportAllocs()
		for b.Loop() {
			r, _, err := s.Open(b.Context(), digest, 0)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
				b.Fatal(err)
			}
			r.Close()
		}
	})
	b.Run("put", func(b *testing.B) {
		b.SetBytes(benchSize)
		b.ReportAllocs()
		for b.Loop() {
			data[0]++ // new content each time: no dedup
			if _, _, err := s.Put(b.Context(), bytes.NewReader(data), 1<<40); err != nil {
				b.Fatal(err)
			}
		}
	})
}
