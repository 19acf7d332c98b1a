package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// PushOptions configures Push.
type PushOptions struct {
	Endpoint, Region, Bucket, Prefix string
	AccessKeyFile, SecretKeyFile     string
	PathStyle                        bool
	// Retain is how long each object is locked (COMPLIANCE mode) when
	// the bucket has Object Lock enabled.
	Retain time.Duration
	// RequireLock refuses a bucket without Object Lock.
	RequireLock bool
	Now         func() time.Time
}

// PushReport is what Push uploaded.
type PushReport struct {
	Bucket      string    `json:"bucket"`
	Prefix      string    `json:"prefix"`
	Objects     int       `json:"objects"`
	Bytes       int64     `json:"bytes"`
	ObjectLock  bool      `json:"object_lock"`
	RetainUntil time.Time `json:"retain_until,omitzero"`
}

// Push uploads a backup set to S3, every file as one object under Prefix,
// streamed from disk, never overwriting an object (If-None-Match: *). If
// the bucket has Object Lock enabled each object is locked in COMPLIANCE
// mode until now+Retain, so nobody, the bucket owner included, can change
// or delete it before then. The set is verified before (custody backup
// verify) and after download, not here.
func Push(ctx context.Context, dir string, o PushOptions) (*PushReport, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Bucket == "" {
		return nil, errors.New("--s3-bucket is required")
	}
	if o.Prefix != "" && !strings.HasSuffix(o.Prefix, "/") {
		return nil, fmt.Errorf("--s3-prefix %q must end in /", o.Prefix)
	}
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if _, err := os.Stat(filepath.Join(dir, SignatureFile)); err != nil {
		return nil, fmt.Errorf("%s is not a signed backup set (%v): push only what backup create finished", dir, err)
	}
	ak, err := readSecretFile(o.AccessKeyFile)
	if err != nil {
		return nil, err
	}
	sk, err := readSecretFile(o.SecretKeyFile)
	if err != nil {
		return nil, err
	}
	opts := s3.Options{Region: o.Region, Credentials: credentials.NewStaticCredentialsProvider(ak, sk, ""), UsePathStyle: o.PathStyle}
	if o.Endpoint != "" {
		opts.BaseEndpoint = aws.String(o.Endpoint)
	}
	client := s3.New(opts)
	rep := &PushReport{Bucket: o.Bucket, Prefix: o.Prefix}
	lc, err := client.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: &o.Bucket})
	rep.ObjectLock = err == nil && lc.ObjectLockConfiguration != nil && lc.ObjectLockConfiguration.ObjectLockEnabled == types.ObjectLockEnabledEnabled
	if !rep.ObjectLock && o.RequireLock {
		return nil, fmt.Errorf("bucket %s has no Object Lock (%v): create it with Object Lock enabled, or drop --require-object-lock", o.Bucket, err)
	}
	if rep.ObjectLock {
		if o.Retain <= 0 {
			return nil, errors.New("--retain must be positive for a bucket with Object Lock")
		}
		rep.RetainUntil = o.Now().Add(o.Retain).UTC().Truncate(time.Second)
	}
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		in := &s3.PutObjectInput{Bucket: &o.Bucket, Key: aws.String(o.Prefix + filepath.ToSlash(rel)), Body: f,
			ContentLength: aws.Int64(fi.Size()), IfNoneMatch: aws.String("*")}
		if rep.ObjectLock {
			in.ObjectLockMode = types.ObjectLockModeCompliance
			in.ObjectLockRetainUntilDate = aws.Time(rep.RetainUntil)
		}
		if _, err := client.PutObject(ctx, in); err != nil {
			return fmt.Errorf("upload %s: %w", rel, err)
		}
		rep.Objects++
		rep.Bytes += fi.Size()
		return nil
	})
	if err != nil {
		return rep, err
	}
	return rep, nil
}

func readSecretFile(path string) (string, error) {
	if path == "" {
		return "", errors.New("--s3-access-key-file and --s3-secret-key-file are required")
	}
	b, err := readBounded(path, 4096)
	if err != nil {
		return "", fmt.Errorf("s3 credentials: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("s3 credentials: %s is empty", path)
	}
	return s, nil
}
