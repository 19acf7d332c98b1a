package eventlog_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/custody-dev/custody/libs/eventlog"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
)

// fakeCatalog numbers events in arrival order. The catalog's own
// authorization and batching are tested against the real server
// (services/catalog/internal/server); this is the client's logic.
type fakeCatalog struct {
	catalogv1.UnimplementedCatalogServiceServer
	batch    bool  // serve AppendEvents
	denyCall error // AppendEvents fails whole
	short    bool  // AppendEvents answers one result too few
	slow     time.Duration

	mu       sync.Mutex
	next     int64
	calls    []int // events per AppendEvents call
	maxBytes int   // largest AppendEvents request
	singles  atomic.Int64
}

func (f *fakeCatalog) one(e *catalogv1.AppendEventRequest) *catalogv1.AppendEventResult {
	if e.GetType() == "bad.type" {
		return &catalogv1.AppendEventResult{Code: uint32(codes.PermissionDenied), Message: "not the emitter of bad.type"}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	return &catalogv1.AppendEventResult{Entry: &catalogv1.LogEntry{Index: f.next - 1, Leaf: e.GetDetails()}}
}

func (f *fakeCatalog) AppendEvent(_ context.Context, e *catalogv1.AppendEventRequest) (*catalogv1.AppendEventResponse, error) {
	f.singles.Add(1)
	r := f.one(e)
	if r.GetCode() != 0 {
		return nil, status.Error(codes.Code(r.GetCode()), r.GetMessage())
	}
	return &catalogv1.AppendEventResponse{Entry: r.GetEntry()}, nil
}

func (f *fakeCatalog) AppendEvents(_ context.Context, req *catalogv1.AppendEventsRequest) (*catalogv1.AppendEventsResponse, error) {
	if !f.batch {
		return nil, status.Error(codes.Unimplemented, "unknown method AppendEvents")
	}
	if f.denyCall != nil {
		return nil, f.denyCall
	}
	time.Sleep(f.slow)
	f.mu.Lock()
	f.calls = append(f.calls, len(req.GetEvents()))
	f.maxBytes = max(f.maxBytes, proto.Size(req))
	f.mu.Unlock()
	out := &catalogv1.AppendEventsResponse{}
	for _, e := range req.GetEvents() {
		out.Results = append(out.Results, f.one(e))
	}
	if f.short {
		out.Results = out.Results[:len(out.Results)-1]
	}
	return out, nil
}

func serve(t *testing.T, f *fakeCatalog) catalogv1.CatalogServiceClient {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(16 << 20))
	catalogv1.RegisterCatalogServiceServer(srv, f)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return catalogv1.NewCatalogServiceClient(conn)
}

func event(i int, typ string, size int) *catalogv1.AppendEventRequest {
	d := fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", size))
	return &catalogv1.AppendEventRequest{Type: typ, Details: []byte(d), Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED}
}

// appendAll appends n events from n goroutines and returns each one's
// entry or error.
func appendAll(a *eventlog.Appender, n int, ev func(i int) *catalogv1.AppendEventRequest) ([]*catalogv1.LogEntry, []error) {
	entries := make([]*catalogv1.LogEntry, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { entries[i], errs[i] = a.Append(context.Background(), ev(i)) })
	}
	wg.Wait()
	return entries, errs
}

func TestEachEventGetsItsOwnResult(t *testing.T) {
	f := &fakeCatalog{batch: true}
	a := eventlog.New(serve(t, f))
	const n = 500
	entries, errs := appendAll(a, n, func(i int) *catalogv1.AppendEventRequest {
		if i%100 == 3 {
			return event(i, "bad.type", 10)
		}
		return event(i, "admission.decided", 10)
	})
	seen := map[int64]bool{}
	for i := range n {
		if i%100 == 3 {
			if status.Code(errs[i]) != codes.PermissionDenied || !strings.Contains(errs[i].Error(), "bad.type") {
				t.Errorf("event %d: %v, want its own PermissionDenied", i, errs[i])
			}
			continue
		}
		if errs[i] != nil {
			t.Fatalf("event %d: %v", i, errs[i])
		}
		if !strings.Contains(string(entries[i].GetLeaf()), fmt.Sprintf(`"n":%d,`, i)) || seen[entries[i].GetIndex()] {
			t.Errorf("event %d got entry %d %q: not its own", i, entries[i].GetIndex(), entries[i].GetLeaf())
		}
		seen[entries[i].GetIndex()] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) >= n || f.singles.Load() != 0 {
		t.Errorf("%d events took %d AppendEvents and %d AppendEvent calls, want them shared", n, len(f.calls), f.singles.Load())
	}
	for _, c := range f.calls {
		if c > eventlog.MaxBatch {
			t.Errorf("a call carried %d events, more than %d", c, eventlog.MaxBatch)
		}
	}
}

func TestLargeEventsAreSplitByBytes(t *testing.T) {
	// A slow catalog: the first calls are outstanding while the other
	// events queue up and leave together, 3.8 MiB in all.
	f := &fakeCatalog{batch: true, slow: 100 * time.Millisecond}
	a := eventlog.New(serve(t, f))
	_, errs := appendAll(a, 64, func(i int) *catalogv1.AppendEventRequest { return event(i, "admission.decided", 60<<10) })
	for i, err := range errs {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maxBytes > eventlog.MaxBatchBytes+64<<10 {
		t.Errorf("largest AppendEvents request %d bytes, want at most about %d", f.maxBytes, eventlog.MaxBatchBytes)
	}
	if most := slices.Max(f.calls); most < 10 {
		t.Errorf("calls of %v events: want the queued events sent together, in calls of about 16", f.calls)
	}
}

func TestOldCatalogGetsOneCallPerEvent(t *testing.T) {
	for _, f := range []*fakeCatalog{
		{batch: false}, // Unimplemented
		{batch: true, denyCall: status.Error(codes.PermissionDenied, "AppendEvents denied for spiffe://custody.test/service/gatekeeper")},
	} {
		a := eventlog.New(serve(t, f))
		_, errs := appendAll(a, 50, func(i int) *catalogv1.AppendEventRequest { return event(i, "admission.decided", 10) })
		for i, err := range errs {
			if err != nil {
				t.Fatalf("event %d against a catalog without AppendEvents: %v", i, err)
			}
		}
		if f.singles.Load() != 50 {
			t.Errorf("%d AppendEvent calls for 50 events, want one each", f.singles.Load())
		}
	}
}

func TestWholeCallFailureReachesEveryCaller(t *testing.T) {
	for name, f := range map[string]*fakeCatalog{
		"unavailable": {batch: true, denyCall: status.Error(codes.Unavailable, "log down")},
		"short":       {batch: true, short: true},
	} {
		a := eventlog.New(serve(t, f))
		_, errs := appendAll(a, 20, func(i int) *catalogv1.AppendEventRequest { return event(i, "admission.decided", 10) })
		for i, err := range errs {
			if err == nil {
				t.Errorf("%s: event %d acknowledged", name, i)
			}
		}
		if f.singles.Load() != 0 {
			t.Errorf("%s: fell back to AppendEvent", name)
		}
	}
}

func TestInvalidWaitGoesToTheCatalog(t *testing.T) {
	f := &fakeCatalog{batch: true}
	a := eventlog.New(serve(t, f))
	e := event(1, "admission.decided", 1)
	e.Wait = catalogv1.AppendWait(99)
	if _, err := a.Append(t.Context(), e); err != nil {
		t.Fatal(err)
	}
	if f.singles.Load() != 1 {
		t.Errorf("an event with wait 99 went in a batch; want it sent alone so the catalog judges it")
	}
}
