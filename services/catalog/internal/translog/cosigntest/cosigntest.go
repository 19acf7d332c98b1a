// Package cosigntest is an in-memory checkpoint co-signer for tests: the
// signer's co-signing contract without its key back ends.
package cosigntest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/translog"
)

// ErrDown is what a Cosigner that is down returns.
var ErrDown = errors.New("co-signer down")

// Cosigner co-signs checkpoints of one log like the signer does: it checks
// that each extends the last one it co-signed (trusting the first), and
// adds its cosignature/v1. It is safe for concurrent use.
type Cosigner struct {
	logKey   string // the log's note verifier key
	origin   string
	signer   note.Signer
	verifier string

	mu      sync.Mutex
	last    []byte
	lastCP  *tlog.Checkpoint
	down    bool
	refuse  bool
	calls   int
	refused int
}

var _ translog.Cosigner = (*Cosigner)(nil)

// New returns a co-signer for the log whose checkpoints logVerifierKey
// verifies, with a new cosignature/v1 key named Name.
func New(logVerifierKey string) (*Cosigner, error) {
	v, err := note.NewVerifier(logVerifierKey)
	if err != nil {
		return nil, fmt.Errorf("log verifier key: %w", err)
	}
	skey, vkey, err := tlog.GenerateCosignerKey(Name)
	if err != nil {
		return nil, err
	}
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		return nil, err
	}
	return &Cosigner{logKey: logVerifierKey, origin: v.Name(), signer: s, verifier: vkey}, nil
}

// Name is the key name of the test co-signer's cosignatures.
const Name = "custody.test/cosigner"

// VerifierKey returns the cosignature/v1 verifier key of the co-signatures.
func (c *Cosigner) VerifierKey() string { return c.verifier }

// SetDown makes every call fail with ErrDown while down is true.
func (c *Cosigner) SetDown(down bool) {
	c.mu.Lock()
	c.down = down
	c.mu.Unlock()
}

// SetRefusing makes every Cosign fail with translog.ErrRefused while
// refusing is true, as the signer does with an inconsistent checkpoint.
func (c *Cosigner) SetRefusing(refusing bool) {
	c.mu.Lock()
	c.refuse = refusing
	c.mu.Unlock()
}

// Stats returns how many Cosign calls there were and how many were refused.
func (c *Cosigner) Stats() (calls, refused int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls, c.refused
}

// Cosigned implements translog.Cosigner.
func (c *Cosigner) Cosigned(_ context.Context, origin string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		return nil, ErrDown
	}
	if origin != c.origin {
		return nil, fmt.Errorf("unknown log %q", origin)
	}
	return c.last, nil
}

// Cosign implements translog.Cosigner.
func (c *Cosigner) Cosign(_ context.Context, checkpoint []byte, fromSize uint64, proof [][]byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		return nil, ErrDown
	}
	c.calls++
	out, err := c.cosignLocked(checkpoint, fromSize, proof)
	if err != nil {
		c.refused++
		return nil, fmt.Errorf("%w: %v", translog.ErrRefused, err)
	}
	return out, nil
}

func (c *Cosigner) cosignLocked(checkpoint []byte, fromSize uint64, proof [][]byte) ([]byte, error) {
	if c.refuse {
		return nil, errors.New("refusing (test)")
	}
	cp, err := tlog.OpenCheckpoint(checkpoint, c.logKey)
	if err != nil {
		return nil, err
	}
	var lastSize uint64
	if c.lastCP != nil {
		lastSize = c.lastCP.Size
	}
	if fromSize != lastSize {
		return nil, fmt.Errorf("from_size %d is not the last co-signed size %d", fromSize, lastSize)
	}
	if c.lastCP != nil {
		if err := tlog.VerifyConsistency(c.lastCP, cp, proof); err != nil {
			return nil, err
		}
	}
	v, _ := note.NewVerifier(c.logKey)
	n, err := note.Open(checkpoint, note.VerifierList(v))
	if err != nil {
		return nil, err
	}
	out, err := note.Sign(n, c.signer)
	if err != nil {
		return nil, err
	}
	c.last, c.lastCP = out, cp
	return out, nil
}

// Server serves a Cosigner as the signer's CosignCheckpoint and
// GetCosignedCheckpoint, with the signer's status codes.
type Server struct {
	signerv1.UnimplementedSignerServiceServer
	C *Cosigner
}

// CosignCheckpoint implements signerv1.SignerServiceServer.
func (s *Server) CosignCheckpoint(ctx context.Context, req *signerv1.CosignCheckpointRequest) (*signerv1.CosignCheckpointResponse, error) {
	out, err := s.C.Cosign(ctx, req.GetCheckpoint(), uint64(req.GetFromSize()), req.GetConsistencyProof())
	if err != nil {
		return nil, toStatus(err)
	}
	return &signerv1.CosignCheckpointResponse{Checkpoint: out}, nil
}

// GetCosignedCheckpoint implements signerv1.SignerServiceServer.
func (s *Server) GetCosignedCheckpoint(ctx context.Context, req *signerv1.GetCosignedCheckpointRequest) (*signerv1.GetCosignedCheckpointResponse, error) {
	out, err := s.C.Cosigned(ctx, req.GetOrigin())
	if err != nil {
		return nil, toStatus(err)
	}
	return &signerv1.GetCosignedCheckpointResponse{Checkpoint: out}, nil
}

func toStatus(err error) error {
	switch {
	case errors.Is(err, translog.ErrRefused):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrDown):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.NotFound, err.Error())
}
