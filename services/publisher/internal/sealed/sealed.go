// Package sealed is the publisher's encrypted, content-addressed blob
// store: envelope encryption over any blobstore.Backend.
//
// Every blob gets a fresh random 256-bit data key, wrapped by a KEK back
// end (package kek) and kept with the blob's record; only ciphertext and
// wrapped keys reach the back end. Content is chunked AES-256-GCM in the
// STREAM construction: chunk i is sealed under a nonce of its index and a
// last-chunk flag, so every chunk is authenticated before any of its bytes
// is released, a read can start at any chunk, and truncation, extension,
// reordering and splicing from another blob are all detected. Digests stay
// the SHA-256 of the plaintext.
package sealed

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"strings"

	libdigest "github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/stream"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore"
	"github.com/custody-dev/custody/services/publisher/internal/kek"
)

// Errors the gRPC layer maps to status codes.
var (
	ErrNotFound  = errors.New("blob not found")
	ErrIntegrity = errors.New("stored blob is corrupted")
	ErrInvalid   = errors.New("invalid digest or offset")
	ErrTooLarge  = errors.New("blob larger than allowed")
	// ErrUnavailable: the KEK back end or the object storage is down;
	// nothing was stored or served. Retry once it is back.
	ErrUnavailable = errors.New("storage unavailable")
)

// MaxSize bounds one blob's plaintext.
const MaxSize = 1 << 40

const (
	// DefaultChunk is the plaintext chunk size (libs/stream's).
	DefaultChunk = stream.DefaultChunk
	minChunk     = stream.MinChunk
	maxChunk     = stream.MaxChunk
	dataKeySize  = 32
	// DataKeySize is the size of a blob data key.
	DataKeySize = dataKeySize
)

// KEK is what the store needs from a key-encryption back end.
type KEK interface {
	Name() string
	Wrap(ctx context.Context, dataKey []byte) (string, error)
	Unwrap(ctx context.Context, wrapped string) ([]byte, error)
	Rewrap(ctx context.Context, wrapped string) (string, error)
}

var _ KEK = kek.KEK(nil)

// Store is safe for concurrent use, also by several publishers sharing the
// back end.
type Store struct {
	objects blobstore.Backend
	kek     KEK
	chunk   int
	logger  *slog.Logger
}

// New returns a store writing through objects with data keys wrapped by k.
func New(objects blobstore.Backend, k KEK, logger *slog.Logger) *Store {
	return &Store{objects: objects, kek: k, chunk: DefaultChunk, logger: logger}
}

// KEK returns the key-encryption back end that wraps the store's data keys
// (partial uploads wrap theirs with it too).
func (s *Store) KEK() KEK { return s.kek }

// SetChunk changes the chunk size of blobs written from now on (tests);
// existing blobs keep theirs.
func (s *Store) SetChunk(n int) {
	if n < minChunk || n > maxChunk {
		panic(fmt.Sprintf("sealed: chunk size %d out of range", n))
	}
	s.chunk = n
}

func recordName(hexDigest string) string { return "keys/sha256/" + hexDigest[:2] + "/" + hexDigest }

// keys derives the content key and the record's MAC key from a data key;
// the content is a libs/stream stream of chunk-byte chunks.
func keys(dataKey []byte, chunk int) (*stream.Cipher, []byte, error) {
	ck, err := hkdf.Key(sha256.New, dataKey, nil, "custody sealed content v1", 32)
	if err != nil {
		return nil, nil, err
	}
	mk, err := hkdf.Key(sha256.New, dataKey, nil, "custody sealed record v1", 32)
	if err != nil {
		return nil, nil, err
	}
	c, err := stream.New(ck, chunk)
	return c, mk, err
}

func (s *Store) kekErr(op string, err error) error {
	if errors.Is(err, kek.ErrUnavailable) {
		return fmt.Errorf("%w: %s: %s KEK: %v", ErrUnavailable, op, s.kek.Name(), err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func storeErr(err error) error {
	switch {
	case errors.Is(err, blobstore.ErrUnavailable):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	case errors.Is(err, ErrTooLarge), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return err
}

// Put streams r into the store while hashing and encrypting it, and returns
// its digest and plaintext size. At most maxSize bytes are read (more is
// ErrTooLarge). The KEK is asked first, so an unavailable KEK fails the
// upload before any byte is read. The blob appears once its ciphertext is
// durable and its record created; on any error nothing is visible. An
// upload of content already stored returns the existing blob's digest.
func (s *Store) Put(ctx context.Context, r io.Reader, maxSize int64) (string, int64, error) {
	dk := make([]byte, dataKeySize)
	if _, err := io.ReadFull(rand.Reader, dk); err != nil {
		return "", 0, fmt.Errorf("store blob: %w", err)
	}
	defer clear(dk)
	wrapped, err := s.kek.Wrap(ctx, dk)
	if err != nil {
		return "", 0, s.kekErr("store blob: wrap data key", err)
	}
	content, macKey, err := keys(dk, s.chunk)
	if err != nil {
		return "", 0, fmt.Errorf("store blob: %w", err)
	}
	id := make([]byte, 16)
	rand.Read(id)
	data := "data/" + hex.EncodeToString(id[:1]) + "/" + hex.EncodeToString(id)
	sr := &plainSource{src: r, h: sha256.New(), maxSize: maxSize}
	if _, err := s.objects.Write(ctx, data, content.Sealer(sr)); err != nil {
		if sr.err != nil {
			err = sr.err // the upload's own failure, not the back end's
		}
		return "", 0, fmt.Errorf("store blob: %w", storeErr(err))
	}
	return s.commit(ctx, record{Version: recordVersion, Digest: "sha256:" + hex.EncodeToString(sr.h.Sum(nil)), Size: sr.total, Chunk: s.chunk,
		Data: data, KEK: s.kek.Name(), Wrapped: wrapped}, macKey)
}

// commit creates the record of a blob whose ciphertext object rec.Data is
// durable; on any error, and for content already stored, the object is
// deleted again.
func (s *Store) commit(ctx context.Context, rec record, macKey []byte) (string, int64, error) {
	data, hexDigest := rec.Data, strings.TrimPrefix(rec.Digest, "sha256:")
	rec.Tag = rec.tag(macKey)
	b, err := json.Marshal(rec)
	if err != nil {
		s.objects.Delete(context.WithoutCancel(ctx), data)
		return "", 0, err
	}
	err = s.objects.Create(ctx, recordName(hexDigest), b)
	if errors.Is(err, blobstore.ErrExists) {
		// Same content stored before (or concurrently): keep that one.
		if derr := s.objects.Delete(context.WithoutCancel(ctx), data); derr != nil {
			s.logger.WarnContext(ctx, "delete duplicate ciphertext", slog.String("object", data), slog.Any("error", derr))
		}
		return rec.Digest, rec.Size, nil
	}
	if err != nil {
		s.objects.Delete(context.WithoutCancel(ctx), data)
		return "", 0, fmt.Errorf("store blob %s: %w", rec.Digest, storeErr(err))
	}
	return rec.Digest, rec.Size, nil
}

// ContentCipher is the stream cipher of the content of a blob whose data
// key is dataKey, with chunk plaintext bytes per chunk: what a resumable
// upload seals its bytes with as they arrive (PutSealed).
func ContentCipher(dataKey []byte, chunk int) (*stream.Cipher, error) {
	c, _, err := keys(dataKey, chunk)
	return c, err
}

// Sealed is a blob its writer has already sealed in the store's content
// format: the file at Path holds exactly the stream ciphertext of Size
// plaintext bytes hashing to Digest, in chunks of Chunk bytes under
// ContentCipher(DataKey, Chunk), and Wrapped is DataKey wrapped by this
// store's KEK.
type Sealed struct {
	Path    string
	DataKey []byte
	Wrapped string
	Chunk   int
	Digest  string
	Size    int64
}

// PutSealed stores a blob sealed by its writer without decrypting,
// re-hashing or re-sealing it: the back end takes the file as the blob's
// ciphertext object (blobstore.Linker: no byte copied), or the file is
// written through Write where it cannot. As with Put, the blob appears
// once its ciphertext is durable and its record created; on any error
// nothing is visible; content already stored returns the existing blob.
// The file stays at Path.
func (s *Store) PutSealed(ctx context.Context, b Sealed) (string, int64, error) {
	if !libdigest.Valid(b.Digest) || b.Size < 0 || b.Size > MaxSize || b.Chunk < minChunk || b.Chunk > maxChunk {
		return "", 0, fmt.Errorf("%w: sealed blob %q of %d bytes in chunks of %d", ErrInvalid, b.Digest, b.Size, b.Chunk)
	}
	fi, err := os.Stat(b.Path)
	if err != nil {
		return "", 0, fmt.Errorf("store sealed blob: %w", err)
	}
	if fi.Size() != stream.SealedSize(b.Size, b.Chunk) {
		return "", 0, fmt.Errorf("store sealed blob %s: ciphertext of %d bytes, want %d", b.Digest, fi.Size(), stream.SealedSize(b.Size, b.Chunk))
	}
	// The data key must be this store's: a record whose key another KEK
	// wrapped would be unreadable.
	dk, err := s.kek.Unwrap(ctx, b.Wrapped)
	if err != nil {
		return "", 0, s.kekErr("store sealed blob: unwrap data key", err)
	}
	same := hmac.Equal(dk, b.DataKey)
	clear(dk)
	if !same {
		return "", 0, fmt.Errorf("store sealed blob %s: its data key is not wrapped by this store's KEK", b.Digest)
	}
	_, macKey, err := keys(b.DataKey, b.Chunk)
	if err != nil {
		return "", 0, fmt.Errorf("store sealed blob: %w", err)
	}
	id := make([]byte, 16)
	rand.Read(id)
	data := "data/" + hex.EncodeToString(id[:1]) + "/" + hex.EncodeToString(id)
	err = errors.ErrUnsupported
	if l, ok := s.objects.(blobstore.Linker); ok {
		err = l.Link(ctx, data, b.Path)
	}
	if errors.Is(err, errors.ErrUnsupported) {
		var f *os.File
		if f, err = os.Open(b.Path); err == nil {
			_, err = s.objects.Write(ctx, data, f)
			f.Close()
		}
	}
	if err != nil {
		return "", 0, fmt.Errorf("store sealed blob %s: %w", b.Digest, storeErr(err))
	}
	return s.commit(ctx, record{Version: recordVersion, Digest: b.Digest, Size: b.Size, Chunk: b.Chunk, Data: data,
		KEK: s.kek.Name(), Wrapped: b.Wrapped}, macKey)
}

// plainSource is the upload's plaintext on its way to the sealer: hashed,
// counted and bounded. err keeps the source's own failure for Put.
type plainSource struct {
	src     io.Reader
	h       hash.Hash
	maxSize int64
	total   int64
	err     error
}

func (p *plainSource) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n, err := p.src.Read(b)
	p.h.Write(b[:n])
	p.total += int64(n)
	if p.total > p.maxSize {
		p.err = fmt.Errorf("%w: more than %d bytes", ErrTooLarge, p.maxSize)
		return 0, p.err
	}
	if err != nil && !errors.Is(err, io.EOF) {
		p.err = err
	}
	return n, err
}

// open reads and authenticates a blob's record and unwraps its key.
func (s *Store) open(ctx context.Context, digest string) (*record, *stream.Cipher, error) {
	if !libdigest.Valid(digest) {
		return nil, nil, fmt.Errorf("%w %q: want sha256:<64 lowercase hex>", ErrInvalid, digest)
	}
	hexDigest := strings.TrimPrefix(digest, "sha256:")
	b, err := s.objects.Get(ctx, recordName(hexDigest))
	if errors.Is(err, blobstore.ErrNotFound) {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, digest)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read blob %s: %w", digest, storeErr(err))
	}
	rec, err := parseRecord(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: key record: %v", ErrIntegrity, digest, err)
	}
	if rec.Digest != digest {
		return nil, nil, fmt.Errorf("%w: %s: key record is for %s", ErrIntegrity, digest, rec.Digest)
	}
	dk, err := s.kek.Unwrap(ctx, rec.Wrapped)
	if errors.Is(err, kek.ErrUnwrap) {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrIntegrity, digest, err)
	}
	if err != nil {
		return nil, nil, s.kekErr("read blob "+digest+": unwrap data key", err)
	}
	defer clear(dk)
	content, macKey, err := keys(dk, rec.Chunk)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrIntegrity, digest, err)
	}
	if !hmac.Equal(rec.tag(macKey), rec.Tag) {
		return nil, nil, fmt.Errorf("%w: %s: key record fails authentication", ErrIntegrity, digest)
	}
	return rec, content, nil
}

// Open returns a reader of the blob's plaintext from offset and the whole
// blob's plaintext size. Every chunk is authenticated before any of its
// bytes is returned; a failing chunk, a missing or extra byte, or a record
// that does not match ends the read with an error wrapping ErrIntegrity
// that names the digest. The KEK or storage down is ErrUnavailable.
func (s *Store) Open(ctx context.Context, digest string, offset int64) (io.ReadCloser, int64, error) {
	rec, content, err := s.open(ctx, digest)
	if err != nil {
		return nil, 0, err
	}
	if offset < 0 || offset > rec.Size {
		return nil, 0, fmt.Errorf("%w: offset %d of %s, which has %d bytes", ErrInvalid, offset, digest, rec.Size)
	}
	// Start at the chunk holding offset; an offset at the end still
	// authenticates the last chunk.
	_, at := stream.Start(rec.Size, offset, rec.Chunk)
	src, objSize, err := s.objects.Open(ctx, rec.Data, at)
	if errors.Is(err, blobstore.ErrNotFound) || errors.Is(err, blobstore.ErrInvalid) {
		return nil, 0, fmt.Errorf("%w: %s: ciphertext missing or short: %v", ErrIntegrity, digest, err)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read blob %s: %w", digest, storeErr(err))
	}
	if objSize != rec.sealedSize() {
		src.Close()
		return nil, 0, fmt.Errorf("%w: %s: ciphertext of %d bytes, want %d", ErrIntegrity, digest, objSize, rec.sealedSize())
	}
	return &opener{r: content.Reader(src, rec.Size, offset), src: src, digest: digest}, rec.Size, nil
}

// opener is a blob's authenticated plaintext, with the stream's errors in
// the store's terms.
type opener struct {
	r      io.Reader
	src    io.Closer
	digest string
}

func (o *opener) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	switch {
	case err == nil, errors.Is(err, io.EOF):
	case errors.Is(err, stream.ErrCorrupt):
		err = fmt.Errorf("%w: %s: %v", ErrIntegrity, o.digest, err)
	default:
		err = fmt.Errorf("read blob %s: %w", o.digest, storeErr(err))
	}
	return n, err
}

func (o *opener) Close() error { return o.src.Close() }

// Verify reads the whole blob, authenticating every chunk and re-hashing
// the plaintext, and returns its size.
func (s *Store) Verify(ctx context.Context, digest string) (int64, error) {
	r, size, err := s.Open(ctx, digest, 0)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, r, make([]byte, 1<<20)); err != nil {
		return 0, err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return 0, fmt.Errorf("%w: %s: its bytes hash to %s", ErrIntegrity, digest, got)
	}
	return size, nil
}

// RewrapResult counts what Rewrap did.
type RewrapResult struct {
	Rewrapped int
	Failed    int
}

// Rewrap re-wraps every blob's data key under the KEK's newest version,
// replacing each record in place; content is not re-encrypted. A record
// that cannot be rewrapped is logged and counted, and the others still
// are; the first such error is returned with the counts.
func (s *Store) Rewrap(ctx context.Context) (RewrapResult, error) {
	var res RewrapResult
	var first error
	err := s.objects.List(ctx, "keys/sha256/", func(name string) error {
		err := s.rewrapOne(ctx, name)
		if errors.Is(err, ErrUnavailable) {
			return err // stop: every other key would fail the same way
		}
		if err != nil {
			res.Failed++
			first = cmpErr(first, err)
			s.logger.ErrorContext(ctx, "rewrap", slog.String("record", name), slog.Any("error", err))
			return nil
		}
		res.Rewrapped++
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("rewrap: %w", storeErr(err))
	}
	return res, first
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func (s *Store) rewrapOne(ctx context.Context, name string) error {
	b, err := s.objects.Get(ctx, name)
	if err != nil {
		return fmt.Errorf("rewrap %s: %w", name, storeErr(err))
	}
	rec, err := parseRecord(b)
	if err != nil {
		return fmt.Errorf("%w: rewrap %s: %v", ErrIntegrity, name, err)
	}
	if name != recordName(strings.TrimPrefix(rec.Digest, "sha256:")) {
		return fmt.Errorf("%w: rewrap %s: record is for %s", ErrIntegrity, name, rec.Digest)
	}
	wrapped, err := s.kek.Rewrap(ctx, rec.Wrapped)
	if err != nil {
		return s.kekErr("rewrap "+rec.Digest, err)
	}
	if wrapped == rec.Wrapped {
		return nil
	}
	rec.Wrapped, rec.KEK = wrapped, s.kek.Name()
	out, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := s.objects.Replace(ctx, name, out); err != nil {
		return fmt.Errorf("rewrap %s: %w", rec.Digest, storeErr(err))
	}
	return nil
}

// Locate returns the name of a blob's ciphertext object, read from its
// record without unwrapping the data key (so without the KEK). A missing
// record is ErrNotFound; a damaged one ErrIntegrity.
func (s *Store) Locate(ctx context.Context, digest string) (string, error) {
	if !libdigest.Valid(digest) {
		return "", fmt.Errorf("%w %q: want sha256:<64 lowercase hex>", ErrInvalid, digest)
	}
	b, err := s.objects.Get(ctx, recordName(strings.TrimPrefix(digest, "sha256:")))
	if errors.Is(err, blobstore.ErrNotFound) {
		return "", fmt.Errorf("%w: %s", ErrNotFound, digest)
	}
	if err != nil {
		return "", fmt.Errorf("locate blob %s: %w", digest, storeErr(err))
	}
	rec, err := parseRecord(b)
	if err != nil {
		return "", fmt.Errorf("%w: %s: key record: %v", ErrIntegrity, digest, err)
	}
	if rec.Digest != digest {
		return "", fmt.Errorf("%w: %s: key record is for %s", ErrIntegrity, digest, rec.Digest)
	}
	return rec.Data, nil
}

// DestroyKey deletes a blob's record, and with it the only copy of its
// wrapped data key: from then on its ciphertext cannot be decrypted by
// anyone (crypto-shredding), wherever copies of it are. Destroying a
// missing record is not an error.
func (s *Store) DestroyKey(ctx context.Context, digest string) error {
	if !libdigest.Valid(digest) {
		return fmt.Errorf("%w %q: want sha256:<64 lowercase hex>", ErrInvalid, digest)
	}
	if err := s.objects.Delete(ctx, recordName(strings.TrimPrefix(digest, "sha256:"))); err != nil {
		return fmt.Errorf("destroy data key of %s: %w", digest, storeErr(err))
	}
	return nil
}

// DeleteCiphertext deletes a ciphertext object named by a record (Locate).
// Only data objects can be deleted this way; deleting a missing one is not
// an error.
func (s *Store) DeleteCiphertext(ctx context.Context, data string) error {
	if !strings.HasPrefix(data, "data/") || !blobstore.ValidName(data) {
		return fmt.Errorf("%w: %q is not a ciphertext object", ErrInvalid, data)
	}
	if err := s.objects.Delete(ctx, data); err != nil {
		return fmt.Errorf("delete ciphertext %s: %w", data, storeErr(err))
	}
	return nil
}

// Inventory lists the store: each readable record's digest and ciphertext
// object, and every ciphertext object. A record that does not parse is
// left out of records and named in damaged (never collect what cannot be
// read: it may be evidence).
func (s *Store) Inventory(ctx context.Context) (records map[string]string, data []string, damaged []string, err error) {
	records = map[string]string{}
	err = s.objects.List(ctx, "keys/sha256/", func(name string) error {
		b, err := s.objects.Get(ctx, name)
		if errors.Is(err, blobstore.ErrNotFound) {
			return nil // deleted meanwhile
		}
		if err != nil {
			return err
		}
		rec, perr := parseRecord(b)
		if perr != nil || name != recordName(strings.TrimPrefix(rec.Digest, "sha256:")) {
			damaged = append(damaged, name)
			return nil
		}
		records[rec.Digest] = rec.Data
		return nil
	})
	if err == nil {
		err = s.objects.List(ctx, "data/", func(name string) error {
			data = append(data, name)
			return nil
		})
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("inventory: %w", storeErr(err))
	}
	return records, data, damaged, nil
}
