package purge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
)

// catalog serves SearchArtifacts by signing key from a list, pageSize at a
// time, as the catalog does.
type catalog struct {
	listed  []*catalogv1.ListedArtifact
	down    bool
	foreign bool // answer with another key's artifacts
	asked   []string
}

func (c *catalog) SearchArtifacts(_ context.Context, in *catalogv1.SearchArtifactsRequest, _ ...grpc.CallOption) (*catalogv1.SearchArtifactsResponse, error) {
	c.asked = append(c.asked, in.GetSignedByKeyId())
	if c.down {
		return nil, status.Error(codes.Unavailable, "catalog down")
	}
	var match []*catalogv1.ListedArtifact
	for _, la := range c.listed {
		if la.GetKeyId() == in.GetSignedByKeyId() || c.foreign {
			match = append(match, la)
		}
	}
	start := 0
	if in.GetPageToken() != "" {
		start, _ = strconv.Atoi(in.GetPageToken())
	}
	end := min(start+int(in.GetPageSize()), len(match))
	resp := &catalogv1.SearchArtifactsResponse{Artifacts: match[start:end]}
	if end < len(match) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	return resp, nil
}

type broker struct {
	down  bool
	calls []*cdnbrokerv1.PurgeDigestsRequest
}

func (b *broker) PurgeDigests(_ context.Context, in *cdnbrokerv1.PurgeDigestsRequest, _ ...grpc.CallOption) (*cdnbrokerv1.PurgeDigestsResponse, error) {
	b.calls = append(b.calls, in)
	if b.down {
		return nil, status.Error(codes.Unavailable, "broker down")
	}
	return &cdnbrokerv1.PurgeDigestsResponse{}, nil
}

func digest(i int) string { return fmt.Sprintf("sha256:%064x", i) }

var (
	revoked = strings.Repeat("a", 64)
	other   = strings.Repeat("b", 64)
	from    = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
)

func listed(key string, i int, at time.Time) *catalogv1.ListedArtifact {
	return &catalogv1.ListedArtifact{KeyId: key, Artifact: &catalogv1.Artifact{Name: "app", Version: strconv.Itoa(i), Digest: digest(i), CreatedAt: timestamppb.New(at)}}
}

// TestKeyRevokedPurgesWhatTheVersionSignedFromTheEffectiveTime: the digests
// the version signed at or after the effective time, each once, over every
// catalog page, in batches the broker accepts, under reason key-revoked and
// the revocation's reference; nothing signed before, nothing of another key.
func TestKeyRevokedPurgesWhatTheVersionSignedFromTheEffectiveTime(t *testing.T) {
	c := &catalog{}
	var want []string
	for i := range 2500 {
		at := from.Add(time.Duration(i-10) * time.Second) // the first 10 before the revocation
		c.listed = append(c.listed, listed(revoked, i, at))
		if i >= 10 {
			want = append(want, digest(i))
		}
	}
	c.listed = append(c.listed, listed(revoked, 20, from.Add(time.Hour))) // a second version of the same bytes
	c.listed = append(c.listed, listed(other, 9000, from.Add(time.Hour))) // another key's
	b := &broker{}
	p := &KeyRevoked{Catalog: c, Broker: b}
	n, err := p.Purge(t.Context(), revoked, from, "key-revoked-ref")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, call := range b.calls {
		if call.GetReason() != Reason || call.GetReference() != "key-revoked-ref" || len(call.GetDigests()) > batch {
			t.Fatalf("purge call %v: want reason %s, the reference, at most %d digests", call, Reason, batch)
		}
		got = append(got, call.GetDigests()...)
	}
	if n != len(want) || !slices.Equal(got, want) {
		t.Fatalf("purged %d digests (%d reported), want %d: the version's from %v, each once", len(got), n, len(want), from)
	}
	if len(c.asked) != 3 || c.asked[0] != revoked {
		t.Fatalf("catalog asked %v, want 3 pages by key %s", c.asked, revoked)
	}
}

// TestKeyRevokedPurgesByWhenTheCurrentEnvelopeWasSigned: with a catalog
// that sends signed_at, the purge judges when the revoked version's
// envelope was recorded, not when the artifact was: an old artifact
// re-signed by the version after the effective time is purged, one
// re-signed before it is not. (The test above sends no signed_at, as an
// older catalog does, and is judged by created_at.)
func TestKeyRevokedPurgesByWhenTheCurrentEnvelopeWasSigned(t *testing.T) {
	signed := func(i int, created, signed time.Time) *catalogv1.ListedArtifact {
		la := listed(revoked, i, created)
		la.SignedAt = timestamppb.New(signed)
		return la
	}
	old := from.Add(-30 * 24 * time.Hour)
	c := &catalog{listed: []*catalogv1.ListedArtifact{
		signed(1, old, old),                                 // published by the version before: kept
		signed(2, old, from.Add(time.Minute)),               // re-signed by the version after: purged
		signed(3, old, from.Add(-time.Minute)),              // re-signed by the version before: kept
		signed(4, from.Add(time.Hour), from.Add(time.Hour)), // published by the version after: purged
		signed(5, old, from),                                // re-signed at the effective time: purged
	}}
	b := &broker{}
	n, err := (&KeyRevoked{Catalog: c, Broker: b}).Purge(t.Context(), revoked, from, "ref")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, call := range b.calls {
		got = append(got, call.GetDigests()...)
	}
	if want := []string{digest(2), digest(4), digest(5)}; n != len(want) || !slices.Equal(got, want) {
		t.Fatalf("purged %v (%d reported), want %v: what the version signed from %v, re-signatures included", got, n, want, from)
	}
}

func TestKeyRevokedFailsWhenADependencyIsDownOrLies(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    *catalog
		b    *broker
	}{
		{"catalog down", &catalog{down: true, listed: []*catalogv1.ListedArtifact{listed(revoked, 1, from)}}, &broker{}},
		{"broker down", &catalog{listed: []*catalogv1.ListedArtifact{listed(revoked, 1, from)}}, &broker{down: true}},
		{"catalog answers another key", &catalog{foreign: true, listed: []*catalogv1.ListedArtifact{listed(other, 1, from)}}, &broker{}},
	} {
		p := &KeyRevoked{Catalog: tc.c, Broker: tc.b}
		if _, err := p.Purge(t.Context(), revoked, from, "ref"); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: Purge = %v, want ErrUnavailable (the purge stays pending)", tc.name, err)
		}
	}
}
