package stream_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/custody-dev/custody/libs/stream"
)

const chunk = stream.MinChunk

func newCipher(t testing.TB) *stream.Cipher {
	t.Helper()
	key := make([]byte, stream.KeySize)
	rand.Read(key)
	c, err := stream.New(key, chunk)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func seal(t testing.TB, c *stream.Cipher, plain []byte) []byte {
	t.Helper()
	b, err := io.ReadAll(c.Sealer(bytes.NewReader(plain)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readFrom(c *stream.Cipher, sealed []byte, size, off int64) ([]byte, error) {
	_, at := stream.Start(size, off, c.Chunk())
	var out bytes.Buffer
	_, err := io.CopyBuffer(&out, c.Reader(bytes.NewReader(sealed[min(at, int64(len(sealed))):]), size, off), make([]byte, 1000))
	return out.Bytes(), err
}

func TestRoundTripFromEveryOffset(t *testing.T) {
	c := newCipher(t)
	for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 3*chunk + 5, 4 * chunk} {
		plain := make([]byte, size)
		rand.Read(plain)
		sealed := seal(t, c, plain)
		if int64(len(sealed)) != stream.SealedSize(int64(size), chunk) {
			t.Fatalf("size %d: sealed %d bytes, SealedSize says %d", size, len(sealed), stream.SealedSize(int64(size), chunk))
		}
		for _, off := range []int{0, 1, chunk - 1, chunk, chunk + 1, size / 2, size - 1, size} {
			if off < 0 || off > size {
				continue
			}
			got, err := readFrom(c, sealed, int64(size), int64(off))
			if err != nil || !bytes.Equal(got, plain[off:]) {
				t.Fatalf("size %d from %d: %d bytes, %v", size, off, len(got), err)
			}
		}
	}
}

func TestTamperingFails(t *testing.T) {
	c := newCipher(t)
	plain := make([]byte, 4*chunk+10)
	rand.Read(plain)
	sealed := seal(t, c, plain)
	const sc = chunk + stream.Overhead
	other := seal(t, newCipher(t), plain)
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
		// good is how many plaintext bytes may come out before the failure.
		good int
	}{
		{"flipped byte in chunk 2", func(b []byte) []byte { b[2*sc+7] ^= 1; return b }, 2 * chunk},
		{"flipped tag of chunk 0", func(b []byte) []byte { b[chunk+3] ^= 1; return b }, 0},
		{"last chunk dropped", func(b []byte) []byte { return b[:4*sc] }, 4 * chunk},
		{"truncated in the last chunk", func(b []byte) []byte { return b[:len(b)-1] }, 4 * chunk},
		{"byte appended", func(b []byte) []byte { return append(b, 0) }, len(plain)},
		{"chunks 1 and 2 swapped", func(b []byte) []byte {
			out := append([]byte{}, b[:sc]...)
			out = append(out, b[2*sc:3*sc]...)
			out = append(out, b[sc:2*sc]...)
			return append(out, b[3*sc:]...)
		}, chunk},
		{"another key's chunk 1", func(b []byte) []byte { copy(b[sc:2*sc], other[sc:2*sc]); return b }, chunk},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readFrom(c, tc.edit(bytes.Clone(sealed)), int64(len(plain)), 0)
			if !errors.Is(err, stream.ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			if len(got) > tc.good || !bytes.Equal(got, plain[:len(got)]) {
				t.Fatalf("released %d bytes before failing, want at most the %d authenticated", len(got), tc.good)
			}
		})
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		key, chunk int
	}{{16, chunk}, {32, stream.MinChunk - 1}, {32, stream.MaxChunk + 1}} {
		if _, err := stream.New(make([]byte, tc.key), tc.chunk); err == nil {
			t.Errorf("New(%d-byte key, chunk %d) succeeded", tc.key, tc.chunk)
		}
	}
}

// FuzzReader: whatever the sealed bytes, the claimed size and the offset,
// a reader returns only bytes that were sealed under the key, in their
// place. The input is 4 bytes of size, 4 of offset, then the sealed stream.
func FuzzReader(f *testing.F) {
	key := bytes.Repeat([]byte{7}, stream.KeySize)
	c, err := stream.New(key, chunk)
	if err != nil {
		f.Fatal(err)
	}
	plain := bytes.Repeat([]byte("custody"), chunk/3)
	sealed := seal(f, c, plain)
	input := func(size, off int, b []byte) []byte {
		return append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(size)), uint32(off)), b...)
	}
	f.Add(input(len(plain), 0, sealed))
	f.Add(input(chunk, 5, sealed[:chunk+stream.Overhead]))
	f.Add(input(len(plain), chunk+1, sealed))
	f.Add(input(0, 0, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 8 {
			return
		}
		size, off := int64(binary.BigEndian.Uint32(in)), int64(binary.BigEndian.Uint32(in[4:]))
		if size > 1<<20 || off > size {
			return
		}
		got, err := readFrom(c, in[8:], size, off)
		if err == nil && int64(len(got)) != size-off {
			t.Fatalf("read %d bytes without error, want %d", len(got), size-off)
		}
		if len(got) > 0 && (int64(len(plain)) < off+int64(len(got)) || !bytes.Equal(got, plain[off:off+int64(len(got))])) {
			t.Fatalf("released %d bytes that were not sealed there", len(got))
		}
	})
}

// TestFormatIsUnchanged: sealed streams are at rest in publisher stores, so
// the format may not drift. The digests were computed with the publisher's
// own sealer before the format moved here (key 32 × 0x07, chunk 4096,
// plaintext byte i = i×31 mod 256).
func TestFormatIsUnchanged(t *testing.T) {
	c, err := stream.New(bytes.Repeat([]byte{7}, stream.KeySize), 4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		size int
		want string
	}{
		{0, "dd6f86ef713c340feaa172d53ed8b3489c158635d26f067514156130191a3021"},
		{5, "70634e0aabb8a05f405c952a8b24beee6a9021783cd2624709eb5beda034d561"},
		{4096, "267c274c42aea116d82da1a3781d02e48fdbe50daa16532b067183d35d5f7310"},
		{3*4096 + 17, "17777badbee40014c5091bc403344858353ebea2c3edf24f49f640acef3973c2"},
	} {
		plain := make([]byte, tc.size)
		for i := range plain {
			plain[i] = byte(i * 31)
		}
		sum := sha256.Sum256(seal(t, c, plain))
		if got := hex.EncodeToString(sum[:]); got != tc.want {
			t.Errorf("size %d: sealed stream hashes to %s, want %s", tc.size, got, tc.want)
		}
	}
}

// onlyReader hides a reader's WriteTo, so that io.Copy goes through Read.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

type failWriter struct{ left int }

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.left {
		n := f.left
		f.left = 0
		return n, errors.New("disk full")
	}
	f.left -= len(p)
	return len(p), nil
}

// TestSealerWriteToEqualsRead: io.Copy takes the sealer's WriteTo; its
// bytes are the Read path's, and a writer's error stops it.
func TestSealerWriteToEqualsRead(t *testing.T) {
	c := newCipher(t)
	for _, size := range []int{0, 1, chunk, chunk + 1, 5*chunk - 3} {
		plain := make([]byte, size)
		rand.Read(plain)
		var viaRead, viaWriteTo bytes.Buffer
		if _, err := io.CopyBuffer(&viaRead, onlyReader{c.Sealer(bytes.NewReader(plain))}, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		n, err := c.Sealer(bytes.NewReader(plain)).(io.WriterTo).WriteTo(&viaWriteTo)
		if err != nil || n != int64(viaWriteTo.Len()) || !bytes.Equal(viaRead.Bytes(), viaWriteTo.Bytes()) {
			t.Fatalf("size %d: WriteTo wrote %d bytes (%v), not the %d Read gives", size, n, err, viaRead.Len())
		}
	}
	plain := make([]byte, 3*chunk)
	if _, err := c.Sealer(bytes.NewReader(plain)).(io.WriterTo).WriteTo(&failWriter{left: chunk}); err == nil || err.Error() != "disk full" {
		t.Fatalf("WriteTo into a failing writer: %v, want its error", err)
	}
	srcErr := errors.New("source broke")
	if _, err := c.Sealer(io.MultiReader(bytes.NewReader(plain), iotestErr{srcErr})).(io.WriterTo).WriteTo(io.Discard); !errors.Is(err, srcErr) {
		t.Fatalf("WriteTo of a failing source: %v, want the source's error", err)
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }
