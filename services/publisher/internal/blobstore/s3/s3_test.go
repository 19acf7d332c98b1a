package s3_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custody-dev/custody/services/publisher/internal/blobstore"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/blobstoretest"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/s3"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/s3/s3test"
)

func TestConformance(t *testing.T) {
	srv := s3test.Start(t)
	blobstoretest.Run(t, func(t *testing.T) blobstore.Backend {
		st, err := s3.New(srv.Bucket(t))
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

func TestPrefixKeepsStoresApart(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Bucket(t)
	cfg.Prefix = "tenant-a/"
	a, err := s3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Prefix = "tenant-b/"
	b, err := s3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Create(t.Context(), "keys/x", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := b.Create(t.Context(), "keys/x", []byte("b")); err != nil {
		t.Fatalf("same name under another prefix: %v", err)
	}
	if got, _ := a.Get(t.Context(), "keys/x"); string(got) != "a" {
		t.Fatalf("prefix a reads %q", got)
	}
}

func TestServerDownIsUnavailable(t *testing.T) {
	srv := s3test.Start(t)
	st, err := s3.New(srv.Bucket(t))
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if _, err := st.Write(t.Context(), "data/x", bytes.NewReader([]byte("x"))); !errors.Is(err, blobstore.ErrUnavailable) {
		t.Errorf("Write with the server down: %v, want ErrUnavailable", err)
	}
	if _, _, err := st.Open(t.Context(), "data/x", 0); !errors.Is(err, blobstore.ErrUnavailable) {
		t.Errorf("Open with the server down: %v, want ErrUnavailable", err)
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	key := filepath.Join(dir, "key")
	os.WriteFile(key, []byte("k\n"), 0o600)
	for name, tc := range map[string]struct {
		cfg  s3.Config
		want string
	}{
		"nothing":           {s3.Config{}, "bucket is required"},
		"bad prefix":        {s3.Config{Bucket: "b", Region: "r", AccessKeyFile: key, SecretKeyFile: key, Prefix: "../x/"}, "prefix"},
		"empty secret file": {s3.Config{Bucket: "b", Region: "r", AccessKeyFile: key, SecretKeyFile: empty}, "is empty"},
		"missing file":      {s3.Config{Bucket: "b", Region: "r", AccessKeyFile: key, SecretKeyFile: filepath.Join(dir, "none")}, "no such file"},
	} {
		if _, err := s3.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
}
