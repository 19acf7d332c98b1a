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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/eventlog"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
)

var (
	// ErrUnavailable means the catalog did not accept an event: the caller
	// must not act as if it had been logged.
	ErrUnavailable = errors.New("audit log unavailable")
	// ErrRefused means the catalog answered and refused a re-signature (no
	// such artifact, another statement, not allowed): retrying the same
	// request does not help.
	ErrRefused = errors.New("catalog refused")
)

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
	// events sends concurrent events together (decision 0087). Each call
	// waits for the connection rather than fail at once while it
	// reconnects (the catalog restarting, or starting after the signer),
	// but not for long (Timeout): the caller fails closed.
	events *eventlog.Appender
	client catalogv1.CatalogServiceClient
}

// New returns a logger appending to the catalog behind c.
func New(c catalogv1.CatalogServiceClient) *Catalog {
	return &Catalog{events: eventlog.New(c, grpc.WaitForReady(true)), client: c}
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
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	_, err := c.events.Append(ctx, &catalogv1.AppendEventRequest{Type: e.Type, SubjectDigest: e.SubjectDigest, Details: details})
	if err != nil {
		return fmt.Errorf("%w: append %s event to the catalog: %s: check the catalog is running", ErrUnavailable, e.Type, status.Convert(err).Message())
	}
	return nil
}

// RecordSignature makes envelope, a re-signature, the current envelope of
// name@version through the catalog's RecordSignature (which only the
// signer's identity may call, and which logs an artifact.resigned entry
// with it as actor), and returns the index of that entry. The catalog's
// call is idempotent for the same envelope. An error wraps ErrUnavailable
// when the catalog could not be reached or did not answer in time (the
// envelope may or may not be current: call again), and ErrRefused when the
// catalog refused it; both carry the catalog's message.
func (c *Catalog) RecordSignature(ctx context.Context, name, version string, envelope []byte) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	resp, err := c.client.RecordSignature(ctx, &catalogv1.RecordSignatureRequest{Name: name, Version: version, Envelope: envelope}, grpc.WaitForReady(true))
	if err != nil {
		st := status.Convert(err)
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Internal, codes.Unknown:
			return 0, fmt.Errorf("%w: record the re-signature of %s@%s in the catalog: %s: check the catalog is running, then re-sign again",
				ErrUnavailable, name, version, st.Message())
		default:
			return 0, fmt.Errorf("%w the re-signature of %s@%s (%s): %s", ErrRefused, name, version, st.Code(), st.Message())
		}
	}
	return resp.GetEntry().GetIndex(), nil
}
