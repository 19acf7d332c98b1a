package signer_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/local"
	"github.com/custody-dev/custody/services/publisher/internal/kek"
	"github.com/custody-dev/custody/services/publisher/internal/kek/kektest"
	"github.com/custody-dev/custody/services/publisher/internal/kek/signer"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

func (s *hsmSigner) client(t *testing.T, as string) signerv1.KeyWrapServiceClient {
	t.Helper()
	conn, err := rpc.Dial(s.addr, s.td.ID("/service/signer"), s.td.Source(t, as), telemetry.Discard("publisher"))
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	return signerv1.NewKeyWrapServiceClient(conn)
}

func (s *hsmSigner) kek(t *testing.T, name string) *signer.KEK {
	t.Helper()
	k, err := signer.New(s.client(t, "/service/publisher"), name, s.addr)
	must(t, err)
	return k
}

// rotate and retire are the custodian's operations, as an admin.
func (s *hsmSigner) rotate(t *testing.T, name string) int32 {
	t.Helper()
	r, err := s.client(t, "/admin/custodian").RotateWrappingKey(t.Context(), &signerv1.RotateWrappingKeyRequest{KeyName: name})
	must(t, err)
	return r.GetVersion()
}

func (s *hsmSigner) retire(t *testing.T, name string, below int32) {
	t.Helper()
	admin := s.client(t, "/admin/custodian")
	for v := int32(1); v < below; v++ {
		_, err := admin.DestroyWrappingKeyVersion(t.Context(), &signerv1.DestroyWrappingKeyVersionRequest{KeyName: name, Version: v})
		if err != nil && status.Code(err) != codes.NotFound {
			t.Fatal(err)
		}
	}
}

func TestConformance(t *testing.T) {
	var names []string
	for i := range 8 {
		names = append(names, fmt.Sprintf("kek-%d", i))
	}
	s := startSigner(t, names...)
	var mu sync.Mutex
	next := 0
	kektest.Run(t, func(t *testing.T) kektest.Backend {
		mu.Lock()
		name := names[next]
		next++
		mu.Unlock()
		var newest int32 = 1
		return kektest.Backend{
			KEK:    s.kek(t, name),
			Rotate: func(t *testing.T) { newest = s.rotate(t, name) },
			Retire: func(t *testing.T) { s.retire(t, name, newest) },
		}
	})
}

func newStore(t *testing.T, k kek.KEK) *sealed.Store {
	t.Helper()
	objects, err := local.New(t.TempDir())
	must(t, err)
	return sealed.New(objects, k, slog.New(slog.DiscardHandler))
}

func read(t *testing.T, store *sealed.Store, d string) ([]byte, error) {
	t.Helper()
	r, _, err := store.Open(t.Context(), d, 0)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// `custody store rewrap` across KEK versions: blobs stored under v1 and
// v2 are moved to v3, v1 and v2 are destroyed in the token, and every blob
// still opens.
func TestRewrapAcrossKEKVersions(t *testing.T) {
	s := startSigner(t, "publisher")
	store := newStore(t, s.kek(t, "publisher"))
	blobs := map[string][]byte{}
	put := func(content string) {
		data := bytes.Repeat([]byte(content), 50000)
		d, _, err := store.Put(t.Context(), bytes.NewReader(data), 1<<30)
		must(t, err)
		blobs[d] = data
	}
	put("under v1")
	if v := s.rotate(t, "publisher"); v != 2 {
		t.Fatalf("rotated to %d, want 2", v)
	}
	put("under v2")
	if v := s.rotate(t, "publisher"); v != 3 {
		t.Fatalf("rotated to %d, want 3", v)
	}
	res, err := store.Rewrap(t.Context())
	if err != nil || res.Rewrapped != 2 || res.Failed != 0 {
		t.Fatalf("Rewrap = %+v, %v; want 2 rewrapped", res, err)
	}
	s.retire(t, "publisher", 3)
	for d, want := range blobs {
		got, err := read(t, store, d)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %s after rewrap and retiring v1, v2: %v", d, err)
		}
	}
	// Every blob is under v3 now; once v3 is destroyed without a rewrap
	// they cannot be read, and that is an integrity failure, not an outage.
	s.rotate(t, "publisher")
	s.retire(t, "publisher", 4)
	for d := range blobs {
		_, err := read(t, store, d)
		if err == nil || errors.Is(err, sealed.ErrUnavailable) || !(errors.Is(err, kek.ErrUnwrap) || errors.Is(err, sealed.ErrIntegrity)) {
			t.Fatalf("read %s under a destroyed KEK version: %v; want an integrity failure, not an outage", d, err)
		}
	}
}

// The signer down, or its token gone: uploads and downloads fail closed
// with Unavailable naming the back end, and work again by themselves when
// it is back.
func TestSignerOrHSMDownFailsClosedAndResumes(t *testing.T) {
	s := startSigner(t, "publisher")
	store := newStore(t, s.kek(t, "publisher"))
	data := bytes.Repeat([]byte("artifact"), 100000)
	d, _, err := store.Put(t.Context(), bytes.NewReader(data), 1<<30)
	must(t, err)
	down := func(why string) {
		t.Helper()
		_, _, err := store.Put(t.Context(), bytes.NewReader([]byte("new")), 1<<30)
		if !errors.Is(err, sealed.ErrUnavailable) || !strings.Contains(err.Error(), "signer KEK") {
			t.Fatalf("Put with %s: %v; want ErrUnavailable naming the signer KEK", why, err)
		}
		if _, err := read(t, store, d); !errors.Is(err, sealed.ErrUnavailable) || !strings.Contains(err.Error(), "signer KEK") {
			t.Fatalf("Open with %s: %v; want ErrUnavailable naming the signer KEK", why, err)
		}
	}
	resumes := func(why string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			got, err := read(t, store, d)
			if err == nil {
				if !bytes.Equal(got, data) {
					t.Fatal("read other bytes")
				}
				break
			}
			if !errors.Is(err, sealed.ErrUnavailable) || time.Now().After(deadline) {
				t.Fatalf("Open after %s: %v\n%s", why, err, s.output())
			}
			time.Sleep(200 * time.Millisecond)
		}
		if _, _, err := store.Put(t.Context(), bytes.NewReader([]byte("after "+why)), 1<<30); err != nil {
			t.Fatalf("Put after %s: %v", why, err)
		}
	}

	s.stop()
	down("the signer stopped")
	s.start(t)
	resumes("the signer restarted")

	away := filepath.Join(s.dir, "token-away")
	must(t, os.Rename(s.tokenDir, away))
	back := sync.OnceValue(func() error { return os.Rename(away, s.tokenDir) })
	t.Cleanup(func() { back() })
	down("the HSM token gone")
	_, err = s.kek(t, "publisher").Wrap(t.Context(), make([]byte, 32))
	if !errors.Is(err, kek.ErrUnavailable) || !strings.Contains(err.Error(), "not available") {
		t.Fatalf("Wrap with the token gone: %v; want ErrUnavailable saying the token is not available", err)
	}
	must(t, back())
	resumes("the HSM token returned")
}
