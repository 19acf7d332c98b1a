package server_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/eventlog"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/server"
)

// TestAppendEventsAuthorizationMatrix sends every event type of the
// matrix in one AppendEvents call from each identity: each event is
// authorized on its own, exactly as by AppendEvent, so a batch cannot
// smuggle a type its sender may not write next to ones it may; the actor
// is always the caller; refused events reach neither the log nor the store.
func TestAppendEventsAuthorizationMatrix(t *testing.T) {
	e := newEnv(t)
	logged := 0
	for _, p := range callers {
		id := "spiffe://custody.test" + p
		req := &catalogv1.AppendEventsRequest{}
		for _, ev := range emitters {
			req.Events = append(req.Events, &catalogv1.AppendEventRequest{
				Type: ev.typ, SubjectDigest: digestOf(ev.typ), Details: []byte(`{"claimed_actor":"spiffe://custody.test/service/signer"}`),
				Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED,
			})
		}
		resp, err := e.client(t, p).AppendEvents(t.Context(), req)
		if !strings.HasPrefix(p, "/service/") && !strings.HasPrefix(p, "/edge/") {
			// The RPC policy refuses the call as a whole, as for AppendEvent.
			if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), id) {
				t.Errorf("AppendEvents by %s: %v, want PermissionDenied naming the caller", p, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("AppendEvents by %s: %v", p, err)
		}
		if len(resp.GetResults()) != len(emitters) {
			t.Fatalf("AppendEvents by %s: %d results for %d events", p, len(resp.GetResults()), len(emitters))
		}
		for i, ev := range emitters {
			r := resp.GetResults()[i]
			allowed := ev.emitter != "" && (p == ev.emitter || strings.HasSuffix(ev.emitter, "/") && strings.HasPrefix(p, ev.emitter))
			if !allowed {
				if codes.Code(r.GetCode()) != codes.PermissionDenied || r.GetEntry() != nil || !strings.Contains(r.GetMessage(), id) {
					t.Errorf("%s by %s in a batch: code %d %q entry %v, want PermissionDenied naming the caller and no entry", ev.typ, p, r.GetCode(), r.GetMessage(), r.GetEntry())
				}
				continue
			}
			if r.GetCode() != 0 {
				t.Errorf("%s by %s in a batch: code %d %q, want it logged", ev.typ, p, r.GetCode(), r.GetMessage())
				continue
			}
			le, perr := tlog.ParseEntry(r.GetEntry().GetLeaf())
			if perr != nil || le.Type != ev.typ || le.Actor != id {
				t.Errorf("%s by %s in a batch: logged %+v (%v); want the caller as the actor", ev.typ, p, le, perr)
			}
			logged++
		}
	}
	if logged != 22 {
		t.Errorf("%d events logged, want one per family that AppendEvent may log (22)", logged)
	}
	size, err := e.log.Size(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if size != uint64(logged) {
		t.Errorf("log has %d entries, want the %d allowed events", size, logged)
	}
	if n := countEvents(t, e); n != logged {
		t.Errorf("store has %d events, want the %d allowed", n, logged)
	}
}

// TestAppendEventsBounds: an empty call and one over the limit are
// refused whole; a malformed event, an unknown wait or an oversized one
// fails alone and the others of its call are logged.
func TestAppendEventsBounds(t *testing.T) {
	e := newEnv(t)
	gk := e.client(t, "/service/gatekeeper")
	ok := func(n int) *catalogv1.AppendEventRequest {
		return &catalogv1.AppendEventRequest{Type: tlog.TypeAdmissionDecided, SubjectDigest: digestOf(fmt.Sprint(n)),
			Details: []byte(fmt.Sprintf(`{"n":%d}`, n)), Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED}
	}
	for _, n := range []int{0, server.MaxAppendBatch + 1} {
		req := &catalogv1.AppendEventsRequest{}
		for i := range n {
			req.Events = append(req.Events, ok(i))
		}
		if _, err := gk.AppendEvents(t.Context(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%d events: %v, want InvalidArgument", n, err)
		}
	}
	req := &catalogv1.AppendEventsRequest{Events: []*catalogv1.AppendEventRequest{
		ok(1),
		{Type: tlog.TypeAdmissionDecided, SubjectDigest: "sha256:nothex", Details: []byte(`{}`), Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED},
		{Type: tlog.TypeAdmissionDecided, Details: []byte(`{"a":1,"a":2}`), Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED},
		{Type: tlog.TypeAdmissionDecided, Details: []byte(`{}`), Wait: catalogv1.AppendWait(99)},
		{Type: tlog.TypeAdmissionDecided, Details: []byte(`{"x":"` + strings.Repeat("x", 65<<10) + `"}`), Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED},
		ok(2),
	}}
	resp, err := gk.AppendEvents(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resp.GetResults() {
		wantOK := i == 0 || i == 5
		switch {
		case wantOK && (r.GetCode() != 0 || r.GetEntry() == nil):
			t.Errorf("event %d: code %d %q, want it logged", i, r.GetCode(), r.GetMessage())
		case !wantOK && codes.Code(r.GetCode()) != codes.InvalidArgument:
			t.Errorf("event %d: code %d %q, want InvalidArgument", i, r.GetCode(), r.GetMessage())
		case !wantOK && len(r.GetMessage()) > 1024:
			t.Errorf("event %d: a %d-byte error message echoes the input", i, len(r.GetMessage()))
		}
	}
	if n := countEvents(t, e); n != 2 {
		t.Errorf("store has %d events, want the 2 valid ones", n)
	}
}

// TestAppenderSharesCalls: concurrent events through eventlog.Appender
// against the real catalog server go out in fewer calls than events, each
// caller gets its own entry (distinct indexes, its own leaf), and an event
// its caller may not write fails for that caller only.
func TestAppenderSharesCalls(t *testing.T) {
	e := newEnv(t)
	a := eventlog.New(e.client(t, "/service/gatekeeper"))
	const n = 200
	var wg sync.WaitGroup
	idx := make([]int64, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			typ := tlog.TypeAdmissionDecided
			if i%50 == 7 {
				typ = tlog.TypeKeyRevoked // the signer's: refused
			}
			en, err := a.Append(context.Background(), &catalogv1.AppendEventRequest{Type: typ, SubjectDigest: digestOf(fmt.Sprint(i)),
				Details: []byte(fmt.Sprintf(`{"n":%d}`, i)), Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED})
			errs[i] = err
			if err == nil {
				idx[i] = en.GetIndex()
				le, perr := tlog.ParseEntry(en.GetLeaf())
				if perr != nil || !strings.Contains(string(le.Details), fmt.Sprintf(`"n":%d`, i)) {
					errs[i] = fmt.Errorf("event %d got the entry %q (%v)", i, en.GetLeaf(), perr)
				}
			}
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	for i, err := range errs {
		if i%50 == 7 {
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("event %d (key.revoked by the gatekeeper): %v, want PermissionDenied", i, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("event %d: %v", i, err)
			continue
		}
		if seen[idx[i]] {
			t.Errorf("event %d: index %d given twice", i, idx[i])
		}
		seen[idx[i]] = true
	}
	calls := counterSum(t, e.tel, "custody_rpc_requests_total", "method", catalogv1.CatalogService_AppendEvents_FullMethodName)
	single := counterSum(t, e.tel, "custody_rpc_requests_total", "method", catalogv1.CatalogService_AppendEvent_FullMethodName)
	t.Logf("%d events in %v AppendEvents calls (%v AppendEvent)", n, calls, single)
	if calls == 0 || calls >= n || single != 0 {
		t.Errorf("%d concurrent events took %v AppendEvents and %v AppendEvent calls, want fewer AppendEvents calls than events and no single ones", n, calls, single)
	}
}
