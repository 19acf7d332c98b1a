package purges

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/eventlog"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	edgev1 "github.com/custody-dev/custody/libs/gen/custody/edge/v1"
)

// Edge is one of Custody's own edges, purged through its Purge RPC.
type Edge struct {
	name   string
	client edgev1.EdgeServiceClient
}

var _ Target = (*Edge)(nil)

// NewEdge returns the target for the edge called name behind client (a
// connection authenticated as that edge's SPIFFE ID).
func NewEdge(name string, client edgev1.EdgeServiceClient) *Edge {
	return &Edge{name: "edge:" + name, client: client}
}

// Name is "edge:<name>".
func (e *Edge) Name() string { return e.name }

// Purge drops the digest from the edge's cache; an edge that did not have
// it cached confirms too.
func (e *Edge) Purge(ctx context.Context, digest, _ string) error {
	if _, err := e.client.Purge(ctx, &edgev1.PurgeRequest{Digest: digest}); err != nil {
		return fmt.Errorf("%s Purge: %s: %s", e.name, status.Code(err), status.Convert(err).Message())
	}
	return nil
}

// Vendor is the shape of the clients in internal/purge/{cloudfront,
// cloudcdn,akamai}: Purge returns the vendor's request ID.
type Vendor interface {
	Purge(ctx context.Context, digest, reference string) (string, error)
}

// CDN is a commercial CDN purged through its vendor client.
type CDN struct {
	name   string
	vendor Vendor
}

var _ Target = (*CDN)(nil)

// NewCDN returns the target for the configured CDN called name.
func NewCDN(name string, v Vendor) *CDN { return &CDN{name: "cdn:" + name, vendor: v} }

// Name is "cdn:<name>".
func (c *CDN) Name() string { return c.name }

// Purge asks the vendor to invalidate the digest's path. Vendors accept an
// invalidation asynchronously; acceptance is the confirmation recorded.
func (c *CDN) Purge(ctx context.Context, digest, reference string) error {
	if _, err := c.vendor.Purge(ctx, digest, reference); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	return nil
}

// Catalog is the Log behind the catalog's AppendEvent, which records the
// broker's SPIFFE ID as the actor.
type Catalog struct {
	// events sends concurrent events (issuances, purges) together
	// (decision 0087).
	events *eventlog.Appender
}

var _ Log = (*Catalog)(nil)

// NewCatalog returns a Log appending through client.
func NewCatalog(client catalogv1.CatalogServiceClient) *Catalog {
	return &Catalog{events: eventlog.New(client)}
}

// Append returns once the event is durably sequenced.
func (c *Catalog) Append(ctx context.Context, typ, subjectDigest string, details []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := c.events.Append(ctx, &catalogv1.AppendEventRequest{Type: typ, SubjectDigest: subjectDigest, Details: details,
		Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED})
	if err != nil {
		return fmt.Errorf("append %s event to the catalog: %s: check the catalog is running", typ, status.Convert(err).Message())
	}
	return nil
}
