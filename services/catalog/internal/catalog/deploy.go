package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/artifact"
	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/tlog"
)

// DeploymentReport is a deployment as the gatekeeper reports it, after it
// verified the allow decision it was made under.
type DeploymentReport struct {
	Name, Version, Digest string
	Environment           string
	// DecisionID and DecisionEnvelopeSHA256 (lowercase hex) name the allow
	// decision and bind the entry to its signed record.
	DecisionID             string
	DecisionEnvelopeSHA256 string
	// ReportedBy is the deployer's SPIFFE ID, as the gatekeeper
	// authenticated it; it is the deployment's actor.
	ReportedBy string
}

// deploymentDetails are the details of a deployment.recorded entry.
type deploymentDetails struct {
	Name                   string `json:"name"`
	Version                string `json:"version"`
	Digest                 string `json:"digest"`
	Environment            string `json:"environment"`
	DecisionID             string `json:"decision_id"`
	DecisionEnvelopeSHA256 string `json:"decision_envelope_sha256"`
	ReportedBy             string `json:"reported_by"`
}

// maxDecisionIDLen bounds a decision id (the gatekeeper's are 32 hex digits).
const maxDecisionIDLen = 64

// RecordDeployment logs and stores a deployment of a logged artifact. actor
// (the caller) must be allowed to write deployment.recorded entries
// (tlog.MayEmit: the gatekeeper), else ErrPermissionDenied and nothing is
// logged or stored. name@version must be logged with digest r.Digest
// (ErrNotFound, or ErrInvalid if the digest differs). It appends the entry
// through SequenceEvent, so it returns once the entry is durably sequenced,
// then stores the deployment row. If storing the row fails after the entry
// was sequenced, it fails with ErrUnavailable and a retry logs the
// deployment again: deployments are logged at least once.
func (c *Catalog) RecordDeployment(ctx context.Context, actor string, r DeploymentReport) (*Event, *Deployed, error) {
	if err := c.authorize(ctx, actor, tlog.TypeDeploymentRecorded); err != nil {
		return nil, nil, err
	}
	if err := validateDeployment(r); err != nil {
		return nil, nil, err
	}
	rec, err := c.store.Artifact(ctx, r.Name, r.Version)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, nil, fmt.Errorf("%w: no artifact %s@%s: only published artifacts can be deployed", ErrNotFound, r.Name, r.Version)
	case err != nil:
		return nil, nil, unavailable("look up artifact", err)
	case !rec.Entry.Logged():
		return nil, nil, fmt.Errorf("%w: artifact %s@%s is still being recorded; retry shortly", ErrNotFound, r.Name, r.Version)
	case rec.Artifact.Digest != r.Digest:
		return nil, nil, fmt.Errorf("%w: digest %s is not the digest of %s@%s (%s)", ErrInvalid, r.Digest, r.Name, r.Version, rec.Artifact.Digest)
	}
	details, err := json.Marshal(deploymentDetails(r))
	if err != nil {
		return nil, nil, fmt.Errorf("encode details: %w", err)
	}
	ev, err := c.sequenceDeployment(ctx, actor, r.Digest, details)
	if err != nil {
		return nil, nil, err
	}
	d := Deployment{ArtifactID: rec.ID, Environment: r.Environment, Actor: r.ReportedBy, DeployedAt: ev.CreatedAt}
	if d.ID, err = c.store.InsertDeployment(ctx, &d); err != nil {
		c.logger.WarnContext(ctx, "deployment logged but not stored: a retry logs it again",
			slog.String("artifact", r.Name+"@"+r.Version), slog.Uint64("index", ev.Entry.Index), slog.Any("error", err))
		return nil, nil, unavailable("store deployment", err)
	}
	return ev, &Deployed{Artifact: rec.Artifact, Deployment: d}, nil
}

// sequenceDeployment appends the deployment.recorded entry through the one
// event path, which refuses the type to AppendEvent's callers.
func (c *Catalog) sequenceDeployment(ctx context.Context, actor, subject string, details []byte) (*Event, error) {
	return c.appendEvent(ctx, actor, tlog.TypeDeploymentRecorded, subject, details, false)
}

func validateDeployment(r DeploymentReport) error {
	var errs []string
	if !ValidName(r.Name) || !ValidVersion(r.Version) {
		errs = append(errs, fmt.Sprintf("name %q and version %q: give the name and version of a recorded artifact", trunc(r.Name), trunc(r.Version)))
	}
	if !digest.Valid(r.Digest) {
		errs = append(errs, fmt.Sprintf("digest %q: want sha256:<64 lowercase hex>", trunc(r.Digest)))
	}
	if !artifact.ValidEnvironment(r.Environment) {
		errs = append(errs, fmt.Sprintf("environment %q: want 1-%d lowercase letters, digits, '-' or '_'", trunc(r.Environment), artifact.MaxEnvironmentLen))
	}
	if r.DecisionID == "" || len(r.DecisionID) > maxDecisionIDLen || !lowerHex(r.DecisionID) {
		errs = append(errs, fmt.Sprintf("decision_id %q: want the allow decision's id (lowercase hex)", trunc(r.DecisionID)))
	}
	if !digest.ValidHex(r.DecisionEnvelopeSHA256) {
		errs = append(errs, fmt.Sprintf("decision_envelope_sha256 %q: want the lowercase hex SHA-256 of the decision record", trunc(r.DecisionEnvelopeSHA256)))
	}
	if id, err := spiffeid.FromString(r.ReportedBy); err != nil || id.String() != r.ReportedBy {
		errs = append(errs, fmt.Sprintf("reported_by %q: want the deployer's SPIFFE ID in canonical form", trunc(r.ReportedBy)))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// lowerHex reports whether s is lowercase hex digits only.
func lowerHex(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') })
}

// ErrRecordedOnly is returned for an AppendEvent of deployment.recorded or
// advisories.imported: those types are logged only with their rows, by
// RecordDeployment and ImportAdvisories.
var ErrRecordedOnly = fmt.Errorf("%w: types %s and %s are logged by RecordDeployment and ImportAdvisories only, with their rows",
	ErrInvalid, tlog.TypeDeploymentRecorded, tlog.TypeAdvisoriesImported)

// ErrSBOMRecordedOnly is returned for an AppendEvent of sbom.attached:
// that type is logged only with its SBOM, by RecordSBOM.
var ErrSBOMRecordedOnly = fmt.Errorf("%w: type %s is logged by RecordSBOM only, with its SBOM", ErrInvalid, tlog.TypeSBOMAttached)

// CheckAppendable fails with ErrRecordedOnly or ErrSBOMRecordedOnly for the
// event types that AppendEvent must not log because another RPC logs them
// with their row.
func CheckAppendable(typ string) error {
	switch typ {
	case tlog.TypeDeploymentRecorded, tlog.TypeAdvisoriesImported:
		return ErrRecordedOnly
	case tlog.TypeSBOMAttached:
		return ErrSBOMRecordedOnly
	}
	return nil
}
