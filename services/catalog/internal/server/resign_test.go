package server_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
)

var (
	rotatedKey = strings.Repeat("e", 64)
	laterKey   = strings.Repeat("f", 64)
)

// resign signs env's statement again, by keyID.
func resign(t *testing.T, env []byte, keyID string) []byte {
	t.Helper()
	e, err := attest.ParseEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	b, err := attest.SignEnvelope(e.PayloadType, e.Payload, keyID, func([]byte) ([]byte, error) { return []byte("sig by " + keyID), nil })
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func logSize(t *testing.T, e *env, c catalogv1.CatalogServiceClient) uint64 {
	t.Helper()
	resp, err := c.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := tlog.OpenCheckpoint(resp.GetCheckpoint(), e.vkey)
	if err != nil {
		t.Fatal(err)
	}
	return cp.Size
}

func TestRecordSignature(t *testing.T) {
	e := newEnv(t)
	pub, adm, reader := e.client(t, "/service/publisher"), e.client(t, "/service/signer"), e.client(t, "/auditor/audit")
	req := recordReq("app", "1.0.0", "bytes of app 1.0.0")
	if _, err := pub.RecordArtifact(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	// Never re-signed, it was signed when it was recorded.
	published, err := reader.SearchArtifacts(t.Context(), &catalogv1.SearchArtifactsRequest{Name: "app", Version: "1.0.0"})
	if err != nil || len(published.GetArtifacts()) != 1 {
		t.Fatalf("SearchArtifacts = %v, %v; want app@1.0.0", published, err)
	}
	if la := published.GetArtifacts()[0]; la.GetSignedAt() == nil || !la.GetSignedAt().AsTime().Equal(la.GetArtifact().GetCreatedAt().AsTime()) {
		t.Fatalf("published: signed_at %v, want its created_at %v", la.GetSignedAt(), la.GetArtifact().GetCreatedAt().AsTime())
	}
	time.Sleep(10 * time.Millisecond) // so the re-signature's time differs from the publication's
	next := resign(t, req.GetEnvelope(), rotatedKey)
	resp, err := adm.RecordSignature(t.Context(), &catalogv1.RecordSignatureRequest{Name: "app", Version: "1.0.0", Envelope: next})
	if err != nil {
		t.Fatalf("RecordSignature: %v", err)
	}
	_, le := checkEntry(t, e.vkey, resp.GetEntry())
	if !le.Time.After(published.GetArtifacts()[0].GetSignedAt().AsTime()) {
		t.Fatalf("re-signed at %v, not after the publication's signed_at %v", le.Time, published.GetArtifacts()[0].GetSignedAt().AsTime())
	}
	prev, sum := sha256.Sum256(req.GetEnvelope()), sha256.Sum256(next)
	want := &tlog.Entry{
		Type: tlog.TypeArtifactResigned, Time: le.Time, Actor: "spiffe://custody.test/service/signer",
		Subject:        tlog.Subject{Name: "app", Version: "1.0.0", Digest: req.GetArtifact().GetDigest()},
		EnvelopeSHA256: hex.EncodeToString(sum[:]),
		Details:        fmt.Appendf(nil, `{"previous_envelope_sha256":"%x","key_id":"%s","previous_key_id":"k1"}`, prev, rotatedKey),
	}
	if diff := cmp.Diff(want, le); diff != "" {
		t.Errorf("logged entry (-want +got):\n%s", diff)
	}

	// A search by the new key says the current envelope was signed when the
	// re-signature was recorded, not when the artifact was: what a key
	// revocation's purge judges by.
	sr, err := reader.SearchArtifacts(t.Context(), &catalogv1.SearchArtifactsRequest{SignedByKeyId: rotatedKey})
	if err != nil || len(sr.GetArtifacts()) != 1 {
		t.Fatalf("SearchArtifacts by the new key = %v, %v; want app@1.0.0", sr, err)
	}
	if la := sr.GetArtifacts()[0]; la.GetSignedAt() == nil || !la.GetSignedAt().AsTime().Equal(le.Time) {
		t.Errorf("signed_at %v, want the re-signature's time %v (artifact created at %v)", la.GetSignedAt().AsTime(), le.Time, la.GetArtifact().GetCreatedAt().AsTime())
	}

	// Readers get the new envelope with the re-signature's entry, whose
	// proof covers the new envelope's hash.
	for _, get := range []*catalogv1.GetArtifactRequest{{Name: "app", Version: "1.0.0"}, {Digest: req.GetArtifact().GetDigest()}} {
		got, err := reader.GetArtifact(t.Context(), get)
		if err != nil {
			t.Fatal(err)
		}
		_, ge := checkEntry(t, e.vkey, got.GetEntry())
		if string(got.GetEnvelope()) != string(next) || ge.EnvelopeSHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("GetArtifact(%v): envelope %s, entry for %s; want the new envelope", get, got.GetEnvelope(), ge.EnvelopeSHA256)
		}
		if diff := cmp.Diff(resp.GetEntry(), got.GetEntry(), cmpProto()); diff != "" {
			t.Errorf("GetArtifact entry differs from RecordSignature's (-want +got):\n%s", diff)
		}
	}

	// Idempotent.
	again, err := adm.RecordSignature(t.Context(), &catalogv1.RecordSignatureRequest{Name: "app", Version: "1.0.0", Envelope: next})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(resp.GetEntry(), again.GetEntry(), cmpProto()); diff != "" {
		t.Errorf("same envelope again returned another entry (-first +again):\n%s", diff)
	}
	if n := logSize(t, e, reader); n != 2 {
		t.Errorf("log size %d, want 2 (publication, one re-signature)", n)
	}

	// It survives a restart.
	e.restart(t)
	reader = e.client(t, "/auditor/audit")
	got, err := reader.GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Name: "app", Version: "1.0.0"})
	if err != nil || string(got.GetEnvelope()) != string(next) {
		t.Errorf("after restart: GetArtifact = %v, %v; want the new envelope", got, err)
	}
}

func TestRecordSignatureRefuses(t *testing.T) {
	e := newEnv(t)
	pub, adm := e.client(t, "/service/publisher"), e.client(t, "/service/signer")
	req := recordReq("app", "1.0.0", "x")
	if _, err := pub.RecordArtifact(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		req     *catalogv1.RecordSignatureRequest
		code    codes.Code
		mention string
	}{
		{"another statement", &catalogv1.RecordSignatureRequest{Name: "app", Version: "1.0.0",
			Envelope: resign(t, envelope("app", "1.0.0", digestOf("y")), rotatedKey)}, codes.InvalidArgument, "statement digest"},
		{"unknown artifact", &catalogv1.RecordSignatureRequest{Name: "app", Version: "2.0.0",
			Envelope: resign(t, envelope("app", "2.0.0", digestOf("x")), rotatedKey)}, codes.NotFound, "app@2.0.0"},
		{"not an envelope", &catalogv1.RecordSignatureRequest{Name: "app", Version: "1.0.0", Envelope: []byte("{")}, codes.InvalidArgument, "envelope"},
		{"no name", &catalogv1.RecordSignatureRequest{Version: "1.0.0", Envelope: resign(t, req.GetEnvelope(), rotatedKey)}, codes.InvalidArgument, "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := adm.RecordSignature(t.Context(), tt.req)
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("got %v, want %v mentioning %q", err, tt.code, tt.mention)
			}
		})
	}
	// Re-signatures are the signer's to record (it calls RecordSignature
	// from its ResignArtifact): an admin, the publisher, an edge or anyone
	// else calling it directly is refused before anything is stored.
	for _, who := range []string{"/admin/ops", "/service/publisher", "/edge/dev", "/auditor/audit", "/service/gatekeeper",
		"/administrator/ops", "/service/signer/extra", "/service/signers"} {
		t.Run("denied "+who, func(t *testing.T) {
			_, err := e.client(t, who).RecordSignature(t.Context(), &catalogv1.RecordSignatureRequest{
				Name: "app", Version: "1.0.0", Envelope: resign(t, req.GetEnvelope(), rotatedKey)})
			want := "/custody.catalog.v1.CatalogService/RecordSignature denied for spiffe://custody.test" + who
			if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != want {
				t.Errorf("got %v, want PermissionDenied %q", err, want)
			}
		})
	}
	if n := logSize(t, e, adm); n != 1 {
		t.Errorf("refused re-signatures reached the log: size %d", n)
	}
	got, err := adm.GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Name: "app", Version: "1.0.0"})
	if err != nil || string(got.GetEnvelope()) != string(req.GetEnvelope()) {
		t.Errorf("after refusals: GetArtifact = %v, %v; want the recorded envelope", got, err)
	}
}

func TestListArtifacts(t *testing.T) {
	e := newEnv(t)
	pub, adm := e.client(t, "/service/publisher"), e.client(t, "/service/signer")
	var want []string
	for i := range 5 {
		v := fmt.Sprintf("1.0.%d", i)
		req := recordReq("app", v, v)
		if _, err := pub.RecordArtifact(t.Context(), req); err != nil {
			t.Fatal(err)
		}
		key := "k1"
		if i%2 == 0 {
			key = rotatedKey
			if _, err := adm.RecordSignature(t.Context(), &catalogv1.RecordSignatureRequest{Name: "app", Version: v,
				Envelope: resign(t, req.GetEnvelope(), rotatedKey)}); err != nil {
				t.Fatal(err)
			}
		}
		want = append(want, v+" "+key)
	}
	// Any member lists, a page at a time.
	list := func(c catalogv1.CatalogServiceClient, key string, size int32) ([]string, int) {
		t.Helper()
		var (
			got   []string
			pages int
			token string
		)
		for {
			resp, err := c.ListArtifacts(t.Context(), &catalogv1.ListArtifactsRequest{SignedByKeyId: key, PageSize: size, PageToken: token})
			if err != nil {
				t.Fatalf("ListArtifacts: %v", err)
			}
			pages++
			for _, l := range resp.GetArtifacts() {
				got = append(got, l.GetArtifact().GetVersion()+" "+l.GetKeyId())
				if l.GetArtifact().GetDigest() != digestOf(l.GetArtifact().GetVersion()) || l.GetArtifact().GetCreatedAt().AsTime().IsZero() {
					t.Errorf("listed artifact %v", l.GetArtifact())
				}
			}
			if token = resp.GetNextPageToken(); token == "" || pages > 10 {
				return got, pages
			}
		}
	}
	for _, who := range []string{"/deployer/pipeline", "/builder/ci", "/edge/dev"} {
		got, pages := list(e.client(t, who), "", 2)
		if diff := cmp.Diff(want, got); diff != "" || pages != 3 {
			t.Errorf("%s, pages of 2: %d pages (-want +got):\n%s", who, pages, diff)
		}
	}
	got, pages := list(adm, rotatedKey, 0)
	if diff := cmp.Diff([]string{"1.0.0 " + rotatedKey, "1.0.2 " + rotatedKey, "1.0.4 " + rotatedKey}, got); diff != "" || pages != 1 {
		t.Errorf("by the rotated key: %d pages (-want +got):\n%s", pages, diff)
	}
	if got, _ := list(adm, laterKey, 0); got != nil {
		t.Errorf("by an unused key: %v", got)
	}
	for _, bad := range []*catalogv1.ListArtifactsRequest{{PageToken: "junk"}, {PageSize: -1}, {SignedByKeyId: strings.Repeat("k", 1000)}} {
		if _, err := adm.ListArtifacts(t.Context(), bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("ListArtifacts(%v): got %v, want InvalidArgument", bad, err)
		}
	}
}
