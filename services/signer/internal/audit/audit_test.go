package audit_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/services/signer/internal/audit"
)

type fakeCatalog struct {
	catalogv1.CatalogServiceClient
	got  []*catalogv1.AppendEventRequest
	down bool
}

// AppendEvents answers as a catalog that predates it: the Appender then
// sends each event as AppendEvent.
func (f *fakeCatalog) AppendEvents(context.Context, *catalogv1.AppendEventsRequest, ...grpc.CallOption) (*catalogv1.AppendEventsResponse, error) {
	return nil, status.Error(codes.Unimplemented, "unknown method AppendEvents")
}

func (f *fakeCatalog) AppendEvent(_ context.Context, req *catalogv1.AppendEventRequest, _ ...grpc.CallOption) (*catalogv1.AppendEventResponse, error) {
	if f.down {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}
	f.got = append(f.got, req)
	return &catalogv1.AppendEventResponse{Entry: &catalogv1.LogEntry{Index: int64(len(f.got) - 1)}}, nil
}

func TestLog(t *testing.T) {
	const d = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	tests := []struct {
		name    string
		event   audit.Event
		want    *catalogv1.AppendEventRequest
		wantErr string
	}{
		{"struct details", audit.Event{Type: "approval.approved", SubjectDigest: d, Details: struct {
			ID string `json:"request_id"`
		}{"r1"}}, &catalogv1.AppendEventRequest{Type: "approval.approved", SubjectDigest: d, Details: []byte(`{"request_id":"r1"}`)}, ""},
		{"nil details", audit.Event{Type: "key.rotated"}, &catalogv1.AppendEventRequest{Type: "key.rotated", Details: []byte(`{}`)}, ""},
		{"not an object", audit.Event{Type: "x", Details: []string{"a"}}, nil, "want a JSON object"},
		{"unmarshallable", audit.Event{Type: "x", Details: map[string]any{"c": make(chan int)}}, nil, "marshal details"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeCatalog{}
			err := audit.New(f).Log(t.Context(), tt.event)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Log: %v, want an error containing %q", err, tt.wantErr)
				}
				if len(f.got) != 0 {
					t.Fatalf("appended %d events after an error", len(f.got))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]*catalogv1.AppendEventRequest{tt.want}, f.got, protocmp.Transform()); diff != "" {
				t.Errorf("appended (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLogCatalogDownIsUnavailable(t *testing.T) {
	err := audit.New(&fakeCatalog{down: true}).Log(t.Context(), audit.Event{Type: "approval.requested"})
	if !errors.Is(err, audit.ErrUnavailable) || !strings.Contains(err.Error(), "catalog") {
		t.Fatalf("Log with the catalog down: %v, want ErrUnavailable naming the catalog", err)
	}
}
