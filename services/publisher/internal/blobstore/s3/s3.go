// Package s3 is a blob-store back end on S3-compatible object storage.
// Small objects are created with a conditional PUT (If-None-Match: *), large
// ones with a multipart upload completed under the same condition, so an
// object appears whole or not at all and is never overwritten by Write or
// Create.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/custody-dev/custody/services/publisher/internal/blobstore"
)

// PartSize is the multipart part size: objects up to it take one PUT.
const PartSize = 8 << 20

// Config says where the bucket is. Credentials are read from files so they
// never appear in flags, the environment or the process list.
type Config struct {
	Endpoint      string // e.g. https://s3.example.net; empty for AWS
	Region        string
	Bucket        string
	Prefix        string // object names are stored as Prefix + name
	AccessKeyFile string
	SecretKeyFile string
	PathStyle     bool // bucket in the path, not the host name
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Bucket == "" {
		errs = append(errs, errors.New("s3: a bucket is required"))
	}
	if c.Region == "" {
		errs = append(errs, errors.New("s3: a region is required"))
	}
	if c.AccessKeyFile == "" || c.SecretKeyFile == "" {
		errs = append(errs, errors.New("s3: access and secret key files are required"))
	}
	if c.Prefix != "" && !blobstore.ValidPrefix(c.Prefix) {
		errs = append(errs, fmt.Errorf("s3: prefix %q: want segments of [a-z0-9._-] ending in /", c.Prefix))
	}
	return errors.Join(errs...)
}

// Store is an S3 bucket (or a prefix of one). Safe for concurrent use.
type Store struct {
	client *s3.Client
	bucket string
	prefix string
}

var _ blobstore.Backend = (*Store)(nil)

// New reads the credential files and returns the store; it does not
// contact the server.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ak, err := readSecret(cfg.AccessKeyFile)
	if err != nil {
		return nil, err
	}
	sk, err := readSecret(cfg.SecretKeyFile)
	if err != nil {
		return nil, err
	}
	client := s3.New(s3.Options{
		Region:       cfg.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(ak, sk, ""),
		UsePathStyle: cfg.PathStyle,
		BaseEndpoint: nilIfEmpty(cfg.Endpoint),
	})
	return &Store{client: client, bucket: cfg.Bucket, prefix: cfg.Prefix}, nil
}

func nilIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("s3 credentials: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("s3 credentials: %s is empty", path)
	}
	return s, nil
}

func (s *Store) key(name string) (*string, error) {
	if !blobstore.ValidName(name) {
		return nil, fmt.Errorf("%w: %q", blobstore.ErrInvalid, name)
	}
	return aws.String(s.prefix + name), nil
}

// classify maps an SDK error onto the blobstore sentinels.
func classify(op, name string, err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "PreconditionFailed", "ConditionalRequestConflict":
			return fmt.Errorf("%s %s: %w", op, name, blobstore.ErrExists)
		case "NoSuchKey", "NotFound":
			return fmt.Errorf("%s %s: %w", op, name, blobstore.ErrNotFound)
		case "InvalidRange":
			return fmt.Errorf("%s %s: %w", op, name, blobstore.ErrInvalid)
		case "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout":
			return fmt.Errorf("%s %s: %w: %s", op, name, blobstore.ErrUnavailable, ae.ErrorCode())
		}
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s %s: %w: %v", op, name, blobstore.ErrUnavailable, err)
	}
	return fmt.Errorf("%s %s: %w", op, name, err)
}

// Write implements blobstore.Backend: one conditional PUT up to PartSize,
// a conditional multipart upload beyond.
func (s *Store) Write(ctx context.Context, name string, r io.Reader) (int64, error) {
	key, err := s.key(name)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, PartSize)
	n, err := io.ReadFull(r, buf)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return int64(n), s.put(ctx, name, key, buf[:n])
	}
	if err != nil {
		return 0, fmt.Errorf("write object %s: %w", name, err)
	}
	up, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: key})
	if err != nil {
		return 0, classify("write object", name, err)
	}
	total, err := s.parts(ctx, name, key, up.UploadId, r, buf, n)
	if err != nil {
		// Abort with a context of its own: the caller's may be the
		// reason we stopped.
		ctxAbort := context.WithoutCancel(ctx)
		s.client.AbortMultipartUpload(ctxAbort, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: key, UploadId: up.UploadId})
		return 0, err
	}
	return total, nil
}

func (s *Store) parts(ctx context.Context, name string, key, id *string, r io.Reader, buf []byte, n int) (int64, error) {
	var done []types.CompletedPart
	var total int64
	for num := int32(1); n > 0; num++ {
		out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: &s.bucket, Key: key, UploadId: id, PartNumber: &num,
			Body: bytes.NewReader(buf[:n]), ContentLength: aws.Int64(int64(n)),
		})
		if err != nil {
			return 0, classify("write object", name, err)
		}
		done = append(done, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		total += int64(n)
		var rerr error
		n, rerr = io.ReadFull(r, buf)
		if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
			return 0, fmt.Errorf("write object %s: %w", name, rerr)
		}
	}
	_, err := s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &s.bucket, Key: key, UploadId: id, IfNoneMatch: aws.String("*"),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: done},
	})
	if err != nil {
		return 0, classify("write object", name, err)
	}
	return total, nil
}

func (s *Store) put(ctx context.Context, name string, key *string, data []byte) error {
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &s.bucket, Key: key, Body: bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))), IfNoneMatch: aws.String("*"),
	})
	if err != nil {
		return classify("create object", name, err)
	}
	return nil
}

// Create implements blobstore.Backend with If-None-Match: *.
func (s *Store) Create(ctx context.Context, name string, data []byte) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	return s.put(ctx, name, key, data)
}

// Replace implements blobstore.Backend: an S3 PUT replaces atomically.
func (s *Store) Replace(ctx context.Context, name string, data []byte) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &s.bucket, Key: key, Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
	})
	if err != nil {
		return classify("replace object", name, err)
	}
	return nil
}

// Get implements blobstore.Backend.
func (s *Store) Get(ctx context.Context, name string) ([]byte, error) {
	r, _, err := s.Open(ctx, name, 0)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, classify("read object", name, err)
	}
	return b, nil
}

// Open implements blobstore.Backend with a ranged GET.
func (s *Store) Open(ctx context.Context, name string, offset int64) (io.ReadCloser, int64, error) {
	key, err := s.key(name)
	if err != nil {
		return nil, 0, err
	}
	if offset < 0 {
		return nil, 0, fmt.Errorf("%w: offset %d", blobstore.ErrInvalid, offset)
	}
	in := &s3.GetObjectInput{Bucket: &s.bucket, Key: key}
	if offset > 0 {
		in.Range = aws.String("bytes=" + strconv.FormatInt(offset, 10) + "-")
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		err = classify("open object", name, err)
		if offset > 0 && errors.Is(err, blobstore.ErrInvalid) {
			// A range starting at the end is unsatisfiable in HTTP but
			// valid here: it reads nothing.
			head, herr := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: key})
			if herr == nil && aws.ToInt64(head.ContentLength) == offset {
				return io.NopCloser(bytes.NewReader(nil)), offset, nil
			}
		}
		return nil, 0, err
	}
	size := aws.ToInt64(out.ContentLength)
	if offset > 0 {
		cr := aws.ToString(out.ContentRange) // bytes first-last/total
		_, total, ok := strings.Cut(cr, "/")
		size, err = strconv.ParseInt(total, 10, 64)
		if !ok || err != nil || !strings.HasPrefix(cr, "bytes "+strconv.FormatInt(offset, 10)+"-") {
			out.Body.Close()
			return nil, 0, fmt.Errorf("open object %s: unexpected Content-Range %q", name, cr)
		}
	}
	return out.Body, size, nil
}

// Delete implements blobstore.Backend.
func (s *Store) Delete(ctx context.Context, name string) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: key}); err != nil {
		if err := classify("delete object", name, err); !errors.Is(err, blobstore.ErrNotFound) {
			return err
		}
	}
	return nil
}

// List implements blobstore.Backend.
func (s *Store) List(ctx context.Context, prefix string, fn func(string) error) error {
	if !blobstore.ValidPrefix(prefix) {
		return fmt.Errorf("%w: prefix %q", blobstore.ErrInvalid, prefix)
	}
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(s.prefix + prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return classify("list objects under", prefix, err)
		}
		for _, o := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
			if !blobstore.ValidName(name) {
				continue // not ours
			}
			if err := fn(name); err != nil {
				return err
			}
		}
	}
	return nil
}
