// Package eventlog appends audit events to the catalog's log, sending the
// events of concurrent callers in one AppendEvents call (decision 0087).
//
// A service that logs many events at once (the gatekeeper, one per
// decision) would otherwise pay a gRPC call per event: headers, TLS
// records, interceptors and a handler goroutine on both sides, about half
// the catalog's CPU per event. The Appender sends an event at once while
// fewer than MaxInFlight calls are outstanding and otherwise lets it join
// the next call, so a lone event is never delayed and concurrent ones go
// together (libs/batch: no timer). Each event keeps its own result: the
// catalog authorizes, validates and logs it as AppendEvent would, and one
// event's error is returned to its caller only.
package eventlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/custody-dev/custody/libs/batch"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
)

const (
	// MaxBatch is the most events one call carries: the catalog's limit.
	MaxBatch = 256
	// MaxBatchBytes bounds the encoded events of one call, far below the
	// catalog's receive limit, so that its answer (each leaf holds the
	// event's details) stays below the client's default receive limit
	// of 4 MiB. A larger batch is sent as several calls.
	MaxBatchBytes = 1 << 20
	// MaxInFlight is how many calls may be outstanding at once: the
	// catalog writes one group to its log while the next one forms.
	MaxInFlight = 4
	// callTimeout bounds one AppendEvents call: a batch outlives its
	// callers' contexts (each caller still stops waiting at its own
	// deadline).
	callTimeout = 30 * time.Second
)

// Appender appends events through one catalog client. It is safe for
// concurrent use.
type Appender struct {
	client catalogv1.CatalogServiceClient
	opts   []grpc.CallOption
	queues map[catalogv1.AppendWait]*batch.Queue[*catalogv1.AppendEventRequest, *catalogv1.AppendEventResult]
	// single is set once the catalog refused AppendEvents itself (one
	// that predates it): from then on each event is its own call.
	single atomic.Bool
}

// New returns an Appender calling client with opts on every call.
func New(client catalogv1.CatalogServiceClient, opts ...grpc.CallOption) *Appender {
	a := &Appender{client: client, opts: opts, queues: map[catalogv1.AppendWait]*batch.Queue[*catalogv1.AppendEventRequest, *catalogv1.AppendEventResult]{}}
	// Events that wait for a proof do not share a call with events that
	// wait only to be sequenced: the call returns when its slowest does.
	for _, w := range []catalogv1.AppendWait{catalogv1.AppendWait_APPEND_WAIT_PROVED, catalogv1.AppendWait_APPEND_WAIT_SEQUENCED} {
		a.queues[w] = batch.New(MaxInFlight, MaxBatch, a.send)
	}
	return a
}

// Append logs req and returns its entry, or the error AppendEvent would
// have returned for it (a gRPC status error: status.Code works on it).
func (a *Appender) Append(ctx context.Context, req *catalogv1.AppendEventRequest) (*catalogv1.LogEntry, error) {
	w := req.GetWait()
	if w == catalogv1.AppendWait_APPEND_WAIT_UNSPECIFIED {
		w = catalogv1.AppendWait_APPEND_WAIT_PROVED // the catalog's default
	}
	q, ok := a.queues[w]
	if !ok || a.single.Load() {
		// An invalid wait gets the catalog's own InvalidArgument.
		resp, err := a.client.AppendEvent(ctx, req, a.opts...)
		if err != nil {
			return nil, err
		}
		return entry(resp.GetEntry())
	}
	r, err := q.Do(ctx, req)
	if err != nil {
		return nil, err
	}
	if c := codes.Code(r.GetCode()); c != codes.OK {
		return nil, status.Error(c, r.GetMessage())
	}
	return entry(r.GetEntry())
}

func entry(e *catalogv1.LogEntry) (*catalogv1.LogEntry, error) {
	if e == nil {
		return nil, ErrNoEntry
	}
	return e, nil
}

// send appends one batch, in calls of at most MaxBatchBytes.
func (a *Appender) send(ctx context.Context, evs []*catalogv1.AppendEventRequest) ([]*catalogv1.AppendEventResult, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	out := make([]*catalogv1.AppendEventResult, 0, len(evs))
	for len(evs) > 0 {
		n, size := 0, 0
		for n < len(evs) {
			size += proto.Size(evs[n]) + 4
			if n > 0 && size > MaxBatchBytes {
				break
			}
			n++
		}
		part, err := a.call(ctx, evs[:n])
		if err != nil {
			return nil, err
		}
		out = append(out, part...)
		evs = evs[n:]
	}
	return out, nil
}

func (a *Appender) call(ctx context.Context, evs []*catalogv1.AppendEventRequest) ([]*catalogv1.AppendEventResult, error) {
	if !a.single.Load() {
		resp, err := a.client.AppendEvents(ctx, &catalogv1.AppendEventsRequest{Events: evs}, a.opts...)
		switch {
		case status.Code(err) == codes.Unimplemented || status.Code(err) == codes.PermissionDenied:
			// A catalog that predates AppendEvents: Unimplemented, or
			// PermissionDenied from its deny-by-default RPC policy. Each
			// event then goes as AppendEvent, authorized the same way.
			a.single.Store(true)
		case err != nil:
			return nil, err
		case len(resp.GetResults()) != len(evs):
			return nil, fmt.Errorf("catalog AppendEvents: %d results for %d events", len(resp.GetResults()), len(evs))
		default:
			return resp.GetResults(), nil
		}
	}
	// A catalog without AppendEvents: one call per event, all at once.
	out := make([]*catalogv1.AppendEventResult, len(evs))
	var wg sync.WaitGroup
	for i, e := range evs {
		wg.Go(func() {
			resp, err := a.client.AppendEvent(ctx, e, a.opts...)
			out[i] = Result(resp, err)
		})
	}
	wg.Wait()
	return out, nil
}

// Result is AppendEvent's answer as one result of AppendEvents: its entry,
// or its error's gRPC code and message.
func Result(resp *catalogv1.AppendEventResponse, err error) *catalogv1.AppendEventResult {
	if err != nil {
		st := status.Convert(err)
		return &catalogv1.AppendEventResult{Code: uint32(st.Code()), Message: st.Message()}
	}
	return &catalogv1.AppendEventResult{Entry: resp.GetEntry()}
}

// ErrNoEntry means the catalog acknowledged an event without its entry.
var ErrNoEntry = errors.New("catalog AppendEvents: an event acknowledged without its entry")
