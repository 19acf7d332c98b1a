// Package audit appends the signer's events to the catalog's transparency log.
package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
)

// ErrUnavailable means the catalog did not accept an event: the caller must
// not act as if it had been logged.
var ErrUnavailable = errors.New("audit log unavailable")

// Timeout bounds one Log call, waiting for the connection included.
const Timeout = 10 * time.Second

// Event is one audit event.
type Event struct {
	// Type is the log entry type, e.g. "approval.approved".
	Type string
	// SubjectDigest is the "sha256:<hex>" digest the event is about, if any.
	SubjectDigest string
	// Details is marshalled to JSON and must marshal to an object; nil is an
	// empty object.
	Details any
}

// Catalog logs events through the catalog's AppendEvent, which records the
// signer's SPIFFE ID as the actor. It is safe for concurrent use.
type Catalog struct {
	client catalogv1.CatalogServiceClient
}

// New returns a logger appending to the catalog behind c.
func New(c catalogv1.CatalogServiceClient) *Catalog {
	return &Catalog{client: c}
}

// Log appends e to the log and returns once the catalog accepted it. An error
// wraps ErrUnavailable when the catalog refused or could not be reached; then
// the event may or may not be in the log, and the caller must fail closed.
func (c *Catalog) Log(ctx context.Context, e Event) error {
	details := []byte("{}")
	if e.Details != nil {
		b, err := json.Marshal(e.Details)
		if err != nil {
			return fmt.Errorf("event %s: marshal details: %w", e.Type, err)
		}
		if !bytes.HasPrefix(b, []byte("{")) {
			return fmt.Errorf("event %s: details marshal to %.20s, want a JSON object", e.Type, b)
		}
		details = b
	}
	// Wait for the connection rather than fail at once while it
	// reconnects (the catalog restarting, or starting after the signer),
	// but not for long: the caller fails closed.
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	_, err := c.client.AppendEvent(ctx, &catalogv1.AppendEventRequest{Type: e.Type, SubjectDigest: e.SubjectDigest, Details: details}, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("%w: append %s event to the catalog: %s: check the catalog is running", ErrUnavailable, e.Type, status.Convert(err).Message())
	}
	return nil
}
