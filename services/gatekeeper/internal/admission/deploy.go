package admission

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/attest"
)

// ErrNoAllow means a deployment report does not come with a valid allow
// decision of this gatekeeper for that artifact and environment; nothing
// was recorded.
var ErrNoAllow = errors.New("no allow decision for this deployment")

// maxDecisionEnvelopeLen bounds the decision record a deployer sends.
const maxDecisionEnvelopeLen = 64 << 10

// DeploymentRequest reports a deployment made under an allow decision.
type DeploymentRequest struct {
	// Name and Version, or Digest, name the artifact deployed.
	Name, Version, Digest string
	Environment           string
	// Envelope is the decision record (Decision.Envelope) of the allow;
	// DecisionID, if set, must be its decision id.
	Envelope   []byte
	DecisionID string
	// Caller is the authenticated SPIFFE ID of the deployer.
	Caller string
}

// Deployment is what the catalog records of a verified deployment report.
type Deployment struct {
	Name, Version, Digest  string
	Environment            string
	DecisionID             string
	DecisionEnvelopeSHA256 string
	ReportedBy             string
}

// RecordDeployment checks that req.Envelope is one of this gatekeeper's
// signed allow decisions (attest.VerifyAllow against the trust root's
// decision keys, at most DeploymentMaxAge old), by a decision key valid
// when it was made and not revoked, about the artifact and environment
// req names, and then has the catalog log and store the deployment. It
// returns the deployment and the index of its log entry. Errors wrap
// ErrInvalid (malformed request), ErrNoAllow (the decision does not
// vouch for this deployment) or ErrUnavailable.
func (g *Gate) RecordDeployment(ctx context.Context, req DeploymentRequest) (*Deployment, int64, error) {
	if err := validateDeployment(req); err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	env, err := attest.ParseEnvelope(req.Envelope)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: decision record: %v", ErrNoAllow, err)
	}
	// Revocations take effect at once, as for admissions.
	if err := g.trust.sync(ctx); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	root, err := g.trust.current()
	if err != nil {
		return nil, 0, fmt.Errorf("%w: no usable trust root to verify the decision with: %v", ErrNoAllow, err)
	}
	d, keyID, err := attest.VerifyAllow(env, root.Keys(attest.PurposeDecision), g.cfg.VerifierID, g.cfg.Now(), g.deploymentMaxAge())
	if err != nil {
		if errors.Is(err, attest.ErrUnknownKey) || errors.Is(err, attest.ErrBadSignature) {
			g.cfg.Metrics.SignatureFailures.WithLabelValues("decision").Inc()
		}
		return nil, 0, fmt.Errorf("%w: %v", ErrNoAllow, err)
	}
	if err := root.CheckSignedAt(keyID, d.Time); err != nil {
		return nil, 0, fmt.Errorf("%w: decision key: %v", ErrNoAllow, err)
	}
	if at, ok := g.trust.revokedAt(keyID); ok {
		return nil, 0, fmt.Errorf("%w: decision key %s was revoked at %s (per the signer): admit again", ErrNoAllow, keyID, stamp(at))
	}
	var problems []string
	if req.Digest != "" && req.Digest != d.Digest {
		problems = append(problems, fmt.Sprintf("the decision is about %s, not %s", d.Digest, req.Digest))
	}
	if req.Digest == "" && (req.Name != d.Name || req.Version != d.Version) {
		problems = append(problems, fmt.Sprintf("the decision is about %s@%s, not %s@%s", d.Name, d.Version, trunc(req.Name), trunc(req.Version)))
	}
	if req.Environment != d.Environment {
		problems = append(problems, fmt.Sprintf("the decision admits environment %q, not %q", d.Environment, req.Environment))
	}
	if req.DecisionID != "" && req.DecisionID != d.DecisionID {
		problems = append(problems, fmt.Sprintf("the decision record is decision %s, not %s", d.DecisionID, trunc(req.DecisionID)))
	}
	if len(problems) > 0 {
		return nil, 0, fmt.Errorf("%w: %s: admit this artifact for this environment and deploy under that decision", ErrNoAllow, strings.Join(problems, "; "))
	}
	sum := sha256.Sum256(req.Envelope)
	dep := &Deployment{Name: d.Name, Version: d.Version, Digest: d.Digest, Environment: d.Environment,
		DecisionID: d.DecisionID, DecisionEnvelopeSHA256: hex.EncodeToString(sum[:]), ReportedBy: req.Caller}
	idx, err := g.cfg.Catalog.RecordDeployment(ctx, *dep)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: record deployment of %s@%s in the catalog: %w", ErrUnavailable, d.Name, d.Version, err)
	}
	g.cfg.Logger.InfoContext(ctx, "deployment recorded", slog.String("artifact", d.Name+"@"+d.Version), slog.String("digest", d.Digest),
		slog.String("environment", d.Environment), slog.String("decision_id", d.DecisionID), slog.String("caller", req.Caller), slog.Int64("log_index", idx))
	return dep, idx, nil
}

// DefaultDeploymentMaxAge is the oldest allow decision a deployment may be
// reported under when Config.DeploymentMaxAge is zero.
const DefaultDeploymentMaxAge = 24 * time.Hour

func (g *Gate) deploymentMaxAge() time.Duration {
	if g.cfg.DeploymentMaxAge > 0 {
		return g.cfg.DeploymentMaxAge
	}
	return DefaultDeploymentMaxAge
}

func validateDeployment(req DeploymentRequest) error {
	var problems []string
	if err := validate(Request{Name: req.Name, Version: req.Version, Digest: req.Digest, Environment: req.Environment}); err != nil {
		problems = append(problems, strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "))
	}
	switch {
	case len(req.Envelope) == 0:
		problems = append(problems, "decision_envelope is missing: send the decision_envelope of the allow (custody admit --json, or --decision FILE)")
	case len(req.Envelope) > maxDecisionEnvelopeLen:
		problems = append(problems, fmt.Sprintf("decision_envelope: %d bytes, more than %d", len(req.Envelope), maxDecisionEnvelopeLen))
	}
	if len(req.DecisionID) > 64 {
		problems = append(problems, "decision_id: more than 64 bytes")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	return nil
}
