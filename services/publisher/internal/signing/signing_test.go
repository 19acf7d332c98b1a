package signing

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
)

// fakeSigner "signs" by echoing the statement; channel "prod" needs
// approvals in batches, as the signer does.
type fakeSigner struct {
	batchCalls, unaryCalls atomic.Int64
	items                  atomic.Int64 // statements received in batches
	batchErr               error
	gate                   chan struct{} // if set, SignArtifacts waits on it
}

func (f *fakeSigner) SignArtifact(_ context.Context, in *signerv1.SignArtifactRequest, _ ...grpc.CallOption) (*signerv1.SignArtifactResponse, error) {
	f.unaryCalls.Add(1)
	return &signerv1.SignArtifactResponse{Envelope: append([]byte("unary:"), in.GetStatement()...), KeyId: "k"}, nil
}

func (f *fakeSigner) SignArtifacts(_ context.Context, in *signerv1.SignArtifactsRequest, _ ...grpc.CallOption) (*signerv1.SignArtifactsResponse, error) {
	f.batchCalls.Add(1)
	f.items.Add(int64(len(in.GetItems())))
	if f.gate != nil {
		<-f.gate
	}
	if f.batchErr != nil {
		return nil, f.batchErr
	}
	resp := &signerv1.SignArtifactsResponse{}
	for _, it := range in.GetItems() {
		r := &signerv1.SignArtifactsResult{Envelope: it.GetStatement(), KeyId: "k"}
		if it.GetChannel() == "prod" {
			r = &signerv1.SignArtifactsResult{Code: int32(codes.FailedPrecondition), Message: "channel prod needs approvals"}
		}
		resp.Results = append(resp.Results, r)
	}
	return resp, nil
}

func TestConcurrentRequestsShareCalls(t *testing.T) {
	gate := make(chan struct{})
	f := &fakeSigner{gate: gate}
	b := New(f, 1, 64)
	const n = 100
	var wg sync.WaitGroup
	errs := make([]error, n)
	got := make([][]byte, n)
	for i := range n {
		wg.Go(func() {
			resp, err := b.SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "dev", Statement: fmt.Appendf(nil, "statement %d", i)})
			errs[i] = err
			got[i] = resp.GetEnvelope()
		})
	}
	// The first call holds the only slot until every other request has
	// queued behind it.
	for b.q.Waiting()+int(f.items.Load()) != n {
		runtime.Gosched()
	}
	close(gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || !bytes.Equal(got[i], fmt.Appendf(nil, "statement %d", i)) {
			t.Fatalf("request %d: %q, %v", i, got[i], errs[i])
		}
	}
	if calls := f.batchCalls.Load(); calls > 3 {
		t.Fatalf("%d SignArtifacts calls for %d requests: want the first, then the rest in batches of at most 64", calls, n)
	}
}

func TestApprovalChannelsGoUnary(t *testing.T) {
	f := &fakeSigner{}
	b := New(f, 2, 64)
	resp, err := b.SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "prod", Statement: []byte("s")})
	if err != nil || string(resp.GetEnvelope()) != "unary:s" || f.unaryCalls.Load() != 1 {
		t.Fatalf("prod request: %q, %v, %d unary calls; want the unary path, which waits for approvals", resp.GetEnvelope(), err, f.unaryCalls.Load())
	}
}

func TestOlderSignerGoesUnary(t *testing.T) {
	f := &fakeSigner{batchErr: status.Error(codes.Unimplemented, "unknown method SignArtifacts")}
	resp, err := New(f, 2, 64).SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "dev", Statement: []byte("s")})
	if err != nil || string(resp.GetEnvelope()) != "unary:s" {
		t.Fatalf("got %q, %v; want the unary fallback", resp.GetEnvelope(), err)
	}
}

func TestSignerDownFailsEveryRequest(t *testing.T) {
	f := &fakeSigner{batchErr: status.Error(codes.Unavailable, "vault is sealed")}
	_, err := New(f, 2, 64).SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "dev", Statement: []byte("s")})
	if status.Code(err) != codes.Unavailable || f.unaryCalls.Load() != 0 {
		t.Fatalf("got %v with %d unary calls, want Unavailable and no retry", err, f.unaryCalls.Load())
	}
}

func TestCallerGivesUp(t *testing.T) {
	gate := make(chan struct{})
	f := &fakeSigner{gate: gate}
	b := New(f, 1, 64)
	go b.SignArtifact(context.Background(), &signerv1.SignArtifactRequest{Channel: "dev", Statement: []byte("first")})
	for f.items.Load() == 0 { // the first call now holds the only slot
		runtime.Gosched()
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := b.SignArtifact(ctx, &signerv1.SignArtifactRequest{Channel: "dev", Statement: []byte("second")}); status.Code(err) != codes.Canceled {
		t.Fatalf("canceled caller: %v, want Canceled", err)
	}
	close(gate)
}
