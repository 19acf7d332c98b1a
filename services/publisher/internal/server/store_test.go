package server_test

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
)

func TestRewrapKeysOnlyForAdmins(t *testing.T) {
	f := start(t)
	for _, as := range []string{"/builder/ci", "/edge/dev", "/deployer/pipeline", "/service/gatekeeper", "/service/signer", "/adminx"} {
		_, err := publisherv1.NewStoreServiceClient(f.dial(t, as)).RewrapKeys(t.Context(), &publisherv1.RewrapKeysRequest{})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("RewrapKeys as %s: %v, want PermissionDenied", as, err)
		}
	}
}

// After RewrapKeys the old KEK version is not needed: it is forgotten and
// every artifact still downloads; content is not re-encrypted.
func TestRewrapKeysRetiresOldKEKVersion(t *testing.T) {
	f := start(t)
	builder := f.client(t, "/builder/ci")
	blobs := map[string][]byte{}
	for _, v := range []string{"1.0.0", "1.0.1", "1.0.2"} {
		data := make([]byte, 300<<10)
		rand.Read(data)
		resp, err := upload(t.Context(), builder, header(v, 0), bytes.NewReader(data), 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		blobs[resp.GetDigest()] = data
	}
	if err := f.kek.Rotate(); err != nil {
		t.Fatal(err)
	}
	resp, err := publisherv1.NewStoreServiceClient(f.dial(t, "/admin/alice")).RewrapKeys(t.Context(), &publisherv1.RewrapKeysRequest{})
	if err != nil || resp.GetRewrapped() != 3 || resp.GetFailed() != 0 {
		t.Fatalf("RewrapKeys = %v, %v; want 3 rewrapped", resp, err)
	}
	if err := f.kek.Forget(); err != nil {
		t.Fatal(err)
	}
	edge := f.client(t, "/edge/dev")
	for d, data := range blobs {
		got, err := download(t, edge, d)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("download %s after rewrap without the old KEK version: %v", d, err)
		}
	}
	// Forgetting without a rewrap loses access, so the step above is
	// what kept the blobs readable.
	data := []byte(strings.Repeat("late", 100))
	up, err := upload(t.Context(), builder, header("2.0.0", 0), bytes.NewReader(data), 100)
	if err != nil {
		t.Fatal(err)
	}
	f.kek.Rotate()
	f.kek.Forget()
	if _, err := download(t, edge, up.GetDigest()); status.Code(err) != codes.DataLoss {
		t.Fatalf("download of a key under a forgotten version: %v, want DataLoss", err)
	}
}
