package server_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/publisher/internal/retention"
)

// The fake catalog's answers to retention: every record (one page), no
// events but the ones appended, no deployments; down makes them fail.

func (f *fakeCatalog) SearchArtifacts(_ context.Context, req *catalogv1.SearchArtifactsRequest) (*catalogv1.SearchArtifactsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, status.Error(codes.Unavailable, "catalog down")
	}
	resp := &catalogv1.SearchArtifactsResponse{}
	for _, r := range f.records {
		if r.GetArtifact().GetChannel() == req.GetChannel() {
			resp.Artifacts = append(resp.Artifacts, &catalogv1.ListedArtifact{Artifact: r.GetArtifact()})
		}
	}
	return resp, nil
}

func (f *fakeCatalog) ListEvents(_ context.Context, req *catalogv1.ListEventsRequest) (*catalogv1.ListEventsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, status.Error(codes.Unavailable, "catalog down")
	}
	resp := &catalogv1.ListEventsResponse{}
	for i, e := range f.events {
		if e.Subject.Digest == req.GetSubjectDigest() {
			leaf, _ := e.Marshal()
			resp.Entries = append(resp.Entries, &catalogv1.LogEntry{Index: int64(i), Leaf: leaf})
		}
	}
	return resp, nil
}

func (f *fakeCatalog) GetLineage(context.Context, *catalogv1.GetLineageRequest) (*catalogv1.GetLineageResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, status.Error(codes.Unavailable, "catalog down")
	}
	return &catalogv1.GetLineageResponse{}, nil
}

func (f *fakeCatalog) AppendEvent(ctx context.Context, req *catalogv1.AppendEventRequest) (*catalogv1.AppendEventResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, status.Error(codes.Unavailable, "catalog down")
	}
	caller, _ := rpc.CallerID(ctx)
	f.events = append(f.events, tlog.Entry{Type: req.GetType(), Time: time.Now().UTC(), Actor: caller.String(), Subject: tlog.Subject{Digest: req.GetSubjectDigest()}, Details: req.GetDetails()})
	return &catalogv1.AppendEventResponse{Entry: &catalogv1.LogEntry{Index: int64(len(f.events) - 1)}}, nil
}

func startRetention(t *testing.T, policy string) *fixture {
	t.Helper()
	p, err := retention.ParsePolicy([]byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	return startFull(t, nil, p, "")
}

// publishVersions uploads app@1..n on channel staging, one hour apart.
func publishVersions(t *testing.T, f *fixture, n int) []string {
	t.Helper()
	var digests []string
	for i := 1; i <= n; i++ {
		resp, err := upload(t.Context(), f.client(t, "/builder/ci"), header(fmt.Sprint(i), 0), strings.NewReader(fmt.Sprint("version ", i)), 4)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, resp.GetDigest())
		f.catalog.mu.Lock()
		f.catalog.records[fmt.Sprint("app@", i)].Artifact.CreatedAt = timestamppb.New(time.Now().Add(time.Duration(i-n) * time.Hour))
		f.catalog.mu.Unlock()
	}
	return digests
}

// TestRunRetentionOnlyForAdmins: nobody but an admin may run retention,
// not even with dry_run; a refused caller deletes nothing.
func TestRunRetentionOnlyForAdmins(t *testing.T) {
	f := startRetention(t, `{"channels": {"staging": {"keep_last": 1}}}`)
	digests := publishVersions(t, f, 2)
	for _, who := range []string{"/builder/ci", "/edge/dev", "/deployer/prod", "/service/gatekeeper", "/service/catalog", "/approver/alice", "/auditor/bob"} {
		for _, dry := range []bool{false, true} {
			_, err := publisherv1.NewStoreServiceClient(f.dial(t, who)).RunRetention(t.Context(), &publisherv1.RunRetentionRequest{DryRun: dry})
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "RunRetention denied for spiffe://custody.test"+who) {
				t.Errorf("%s (dry run %v): %v, want PermissionDenied naming the caller", who, dry, err)
			}
		}
	}
	if _, err := download(t, f.client(t, "/edge/dev"), digests[0]); err != nil {
		t.Fatalf("a refused run deleted: %v", err)
	}
	// Without a policy even an admin is told what to do.
	g := start(t)
	_, err := publisherv1.NewStoreServiceClient(g.dial(t, "/admin/ops")).RunRetention(t.Context(), &publisherv1.RunRetentionRequest{})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--retention-policy") {
		t.Fatalf("no policy: %v", err)
	}
}

// TestRunRetentionDeletesThroughTheAPI: an admin's run deletes the old
// version for good (not served, never bound again, ciphertext gone) and
// logs it as the publisher; the catalog down deletes nothing.
func TestRunRetentionDeletesThroughTheAPI(t *testing.T) {
	f := startRetention(t, `{"channels": {"staging": {"keep_last": 2}}}`)
	digests := publishVersions(t, f, 3)
	oldCiphertext := ciphertextPath(t, f.dir, digests[0])
	admin := publisherv1.NewStoreServiceClient(f.dial(t, "/admin/ops"))

	f.catalog.mu.Lock()
	f.catalog.down = true
	f.catalog.mu.Unlock()
	if _, err := admin.RunRetention(t.Context(), &publisherv1.RunRetentionRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("catalog down: %v, want Unavailable", err)
	}
	if _, err := os.Stat(oldCiphertext); err != nil {
		t.Fatalf("catalog down, yet: %v", err)
	}
	f.catalog.mu.Lock()
	f.catalog.down = false
	f.catalog.mu.Unlock()

	dry, err := admin.RunRetention(t.Context(), &publisherv1.RunRetentionRequest{DryRun: true})
	if err != nil || !dry.GetDryRun() || len(dry.GetDeleted()) != 1 || dry.GetDeleted()[0].GetVersion() != "1" {
		t.Fatalf("dry run: %v %v", dry, err)
	}
	resp, err := admin.RunRetention(t.Context(), &publisherv1.RunRetentionRequest{})
	if err != nil || len(resp.GetDeleted()) != 1 || resp.GetDeletedCount() != 1 || !resp.GetDeleted()[0].GetBlobDestroyed() || resp.GetDeleted()[0].GetDigest() != digests[0] {
		t.Fatalf("run: %v %v", resp, err)
	}
	if _, err := os.Stat(oldCiphertext); !os.IsNotExist(err) {
		t.Fatalf("ciphertext of the deleted version: %v", err)
	}
	if _, err := download(t, f.client(t, "/edge/dev"), digests[0]); status.Code(err) != codes.NotFound {
		t.Fatalf("download of the deleted version: %v, want NotFound", err)
	}
	for _, d := range digests[1:] {
		if got, err := download(t, f.client(t, "/edge/dev"), d); err != nil || len(got) == 0 {
			t.Fatalf("kept version: %v", err)
		}
	}
	// The deleted name@version is never bound again, to any bytes; its old
	// bytes under a new version are stored afresh.
	for _, body := range []string{"version 1", "other bytes"} {
		_, err := upload(t.Context(), f.client(t, "/builder/ci"), header("1", 0), strings.NewReader(body), 4)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "deleted by retention") {
			t.Fatalf("re-upload of app@1 (%s): %v, want FailedPrecondition", body, err)
		}
	}
	again, err := upload(t.Context(), f.client(t, "/builder/ci"), header("4", 0), strings.NewReader("version 1"), 4)
	if err != nil || again.GetDigest() != digests[0] {
		t.Fatalf("old bytes as a new version: %v %v", again, err)
	}
	if got, err := download(t, f.client(t, "/edge/dev"), digests[0]); err != nil || !bytes.Equal(got, []byte("version 1")) {
		t.Fatalf("old bytes stored again: %q %v", got, err)
	}
	f.catalog.mu.Lock()
	defer f.catalog.mu.Unlock()
	var logged []tlog.Entry
	for _, e := range f.catalog.events {
		if e.Type == tlog.TypeArtifactRetentionDeleted {
			logged = append(logged, e)
		}
	}
	if len(logged) != 1 || logged[0].Subject.Digest != digests[0] || logged[0].Actor != "spiffe://custody.test/service/publisher" {
		t.Fatalf("logged %+v", logged)
	}
}
