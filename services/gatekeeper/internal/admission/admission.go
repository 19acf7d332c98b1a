// Package admission decides whether an artifact may be deployed to an
// environment: it verifies the artifact's evidence, evaluates the admission
// policy, and has every decision signed and logged before returning it.
package admission

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/custody-dev/custody/libs/advisory"
	"github.com/custody-dev/custody/libs/artifact"
	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/verify"
	"github.com/custody-dev/custody/libs/vex"
	"github.com/custody-dev/custody/services/gatekeeper/internal/policy"
)

// EventType is the type of the log entry of every decision.
const EventType = tlog.TypeAdmissionDecided

// PolicyURI names the admission policy in decision records.
const PolicyURI = "custody:policy/admission"

var (
	// ErrInvalid means the request itself is malformed.
	ErrInvalid = errors.New("invalid admission request")
	// ErrNotFound is returned by a Catalog that has no such artifact and by
	// a Publisher that has no such blob.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt is returned by a Publisher whose stored bytes no longer
	// hash to their digest.
	ErrCorrupt = errors.New("stored bytes do not match their digest")
	// ErrUnavailable means a service the decision depends on could not be
	// reached or failed; no decision was made. Retrying may succeed.
	ErrUnavailable = errors.New("dependency unavailable")
)

// Evidence is what the catalog holds about an artifact. None of it is
// trusted until verified (libs/verify).
type Evidence struct {
	verify.Evidence
	// CreatedAt is when the catalog recorded the artifact, for the policy;
	// nothing signs it.
	CreatedAt time.Time
	// SBOM is whether the catalog says an SBOM is attached: with
	// SBOMNone the SBOM is not asked for, as SBOMs.SBOM would find none
	// (the catalog is the one that answers that either way).
	SBOM SBOMPresence
}

// SBOMPresence is what the catalog said, with an artifact's record, about
// its SBOM.
type SBOMPresence int

const (
	// SBOMUnknown: the catalog did not say (or predates saying it); the
	// SBOM is asked for.
	SBOMUnknown SBOMPresence = iota
	// SBOMNone: no SBOM is attached.
	SBOMNone
	// SBOMAttached: an SBOM is attached; it is read and verified.
	SBOMAttached
)

// Event is an audit event to append to the log.
type Event struct {
	Type          string
	SubjectDigest string
	// Details is a JSON object.
	Details []byte
}

// Catalog holds artifact records, envelopes and the transparency log.
type Catalog interface {
	// Evidence returns an artifact's record and evidence, by name and
	// version or, if digest is set, by digest. It returns ErrNotFound
	// (wrapped) if there is no such artifact.
	Evidence(ctx context.Context, name, version, digest string) (*Evidence, error)
	// AppendEvent logs e and returns the index of its entry.
	AppendEvent(ctx context.Context, e Event) (int64, error)
	// RecordDeployment has the catalog log and store a verified
	// deployment, and returns the index of its entry.
	RecordDeployment(ctx context.Context, d Deployment) (int64, error)
}

// Signer holds the signing keys and publishes the trust root.
type Signer interface {
	// TrustRoots returns the trust-root envelopes after version after,
	// oldest first. They are verified before use.
	TrustRoots(ctx context.Context, after int64) ([][]byte, error)
	// Revocations returns, by key id, when each key version the signer
	// reports revoked was revoked. They are used only to narrow trust.
	Revocations(ctx context.Context) (map[string]time.Time, error)
	// SignDecision signs an in-toto statement carrying a VSA and returns the
	// DSSE envelope.
	SignDecision(ctx context.Context, statement []byte) ([]byte, error)
}

// Publisher holds the artifact bytes.
type Publisher interface {
	// VerifyBlob re-checks that the stored blob of digest still hashes to
	// it. It returns ErrNotFound or ErrCorrupt (wrapped) if not.
	VerifyBlob(ctx context.Context, digest string) error
}

// Stops tells which stops (kill switch, pause) apply to an environment,
// and which artifacts are revoked.
type Stops interface {
	// Denials returns why an admission to env must be denied now; nil if
	// no stop applies.
	Denials(env string) []string
	// Revoked returns why an admission of the artifact digest must be
	// denied in every environment, naming its revocation; "" if it is not
	// revoked.
	Revoked(digest string) string
}

// LogHead judges an admission against the log's head: the latest co-signed
// checkpoint the gatekeeper holds (loghead.Tracker is one).
type LogHead interface {
	// Check returns why the admission must be denied ("" if not: the head
	// is fresh and entry, the artifact's entry checkpoint or nil, is
	// consistent with it) and, if not, what it confirmed. An error means
	// the check could not be made.
	Check(ctx context.Context, entry *tlog.Checkpoint) (denial, confirmed string, err error)
}

// Deployments tells which versions of a name were deployed to an
// environment; remote.Catalog is one.
type Deployments interface {
	// DeployedVersions returns every version of name deployed to env at
	// least once.
	DeployedVersions(ctx context.Context, name, env string) ([]string, error)
}

// Rollbacks is the rollback rule (decision 0078).
type Rollbacks interface {
	// Denial returns why admitting name@version to env must be denied
	// given the versions deployed there: "" if it is not lower than the
	// highest of them, or a granted rollback approval covers it.
	Denial(name, version, env string, deployed []string) string
}

// SBOMs reads an artifact's verified SBOM; remote.Catalog is one.
type SBOMs interface {
	// SBOM returns the components parsed from the attested document of
	// a's SBOM after verifying it against root with o's revocations
	// (libs/verify's SBOM check), with the attestation's envelope.
	// ErrNotFound (wrapped) if a has none; an error wrapping
	// verify.ErrVerification if it fails verification, and then the
	// result, if not nil, holds only the envelope that failed.
	SBOM(ctx context.Context, a verify.Artifact, root *trustroot.Root, o verify.Options) (*VerifiedSBOM, error)
}

// VerifiedSBOM is an artifact's SBOM as SBOMs.SBOM read it.
type VerifiedSBOM struct {
	// Components are parsed from the attested document.
	Components []sbom.Component
	Ref        *attest.SBOMRef
	// Envelope is the SBOM attestation's DSSE envelope as the catalog
	// served it (and the log names by its SHA-256): an input attestation
	// of the decision.
	Envelope []byte
}

// Advisories reads the advisories that affect an artifact's verified SBOM
// components; remote.Catalog is one.
type Advisories interface {
	// Advisories returns the advisories affecting comps, the components
	// of a's verified SBOM, matched here by libs/advisory against the
	// advisory documents the catalog serves (the catalog names the
	// candidates; their documents decide the match and the severity).
	// ErrIncomplete (wrapped) if the catalog cannot list every candidate;
	// any other error means the advisories could not be read.
	Advisories(ctx context.Context, a verify.Artifact, comps []sbom.Component) ([]advisory.Match, error)
}

// VEX reads the VEX documents logged about an artifact; remote.Catalog is
// one.
type VEX interface {
	// VEX returns the vex.added entries about a, an artifact whose
	// evidence the caller verified against root, in log order, each
	// verified by libs/verify's VEX check. An error wrapping
	// verify.ErrVerification if any fails it; ErrIncomplete (wrapped) if
	// the catalog could not list them all; any other error means they
	// could not be read.
	VEX(ctx context.Context, a verify.Artifact, root *trustroot.Root) ([]vex.Entry, error)
}

// ErrIncomplete is returned (wrapped) by Advisories when the catalog's
// candidate list was cut short: the gatekeeper denies rather than admit
// on a partial check.
var ErrIncomplete = errors.New("advisories incomplete")

// Request asks whether an artifact may be deployed to an environment.
type Request struct {
	// Name and Version, or Digest, name the artifact.
	Name, Version, Digest string
	Environment           string
	// Caller is the authenticated SPIFFE ID of whoever asked; it is logged.
	Caller string
}

// Decision is a signed, logged admission decision.
type Decision struct {
	ID    string
	Allow bool
	// Reasons are every reason to deny, or for an allow the checks that
	// passed followed by warnings ("warning: …").
	Reasons []string
	// PolicyDigest and PolicyRevision are the policy bundle's
	// (policy.Policy.Digest and Revision).
	PolicyDigest   string
	PolicyRevision string
	// DryRun is set when the environment is in dry-run mode
	// (Config.DryRun); PolicyDenials are then the policy's denials the
	// decision turned into warnings: with any, the real decision was a
	// deny and Allow reports the dry-run's allow. Verification failures,
	// the gatekeeper's own denials (SBOM forged, advisories incomplete,
	// rollback rule, policy not evaluable) and stops are never softened.
	DryRun        bool
	PolicyDenials []string
	// InputAttestations are the attestations the decision evaluated, by
	// their envelopes' SHA-256: the provenance, the SBOM if the artifact
	// has one and its evidence verified (VEX statements are to follow).
	InputAttestations []attest.ResourceDescriptor
	// Name, Version and Digest are the artifact's, as far as known.
	Name, Version, Digest string
	Environment           string
	// Time is when the decision was made: the VSA's timeVerified.
	Time time.Time
	// Envelope is the DSSE envelope of the decision's VSA; nil if the
	// artifact's digest, name or version is unknown (a deny).
	Envelope []byte
	// LogIndex is the index of the decision's entry in the log.
	LogIndex int64
}

// Verdict returns "allow" or "deny".
func (d *Decision) Verdict() string {
	if d.Allow {
		return "allow"
	}
	return "deny"
}

// RealVerdict returns the decision without dry-run: "deny" for a dry-run
// allow the policy denied, else Verdict.
func (d *Decision) RealVerdict() string {
	if len(d.PolicyDenials) > 0 {
		return "deny"
	}
	return d.Verdict()
}

// Config configures a Gate.
type Config struct {
	Catalog   Catalog
	Signer    Signer
	Publisher Publisher
	Policy    *policy.Policy
	// TrustRoot is the trust root, from the pinned one: artifact keys and
	// log checkpoint keys come from it. Required.
	TrustRoot *trustroot.Trusted
	// AcceptBeforeRevocation lets signatures by a revoked key version
	// stand if they were logged before the revocation time; by default a
	// revoked version's signatures are all denied.
	AcceptBeforeRevocation bool
	// VerifierID is the gatekeeper's own SPIFFE ID, recorded as the VSA's
	// verifier.
	VerifierID string
	// Stops are the pause and kill-switch state; nil means none (tests).
	Stops Stops
	// LogHead checks that the log is not frozen (its head is fresh) and
	// that the artifact's entry checkpoint is consistent with the head
	// (ATTACKS.md #14); nil means neither is checked (tests).
	LogHead LogHead
	// Rollbacks, with Deployments, denies admitting a lower version of a
	// name than the highest deployed to the environment unless a rollback
	// approval covers it; nil means no rollback rule (tests).
	Rollbacks   Rollbacks
	Deployments Deployments
	// SBOMs reads the artifact's verified SBOM for the policy (its licence
	// rules); nil means none is read and the policy sees no SBOM (tests).
	SBOMs SBOMs
	// Advisories reads the advisories affecting the verified SBOM's
	// components for the policy's vulnerability rules (decision 0094);
	// nil means none is read and the policy sees no vulnerabilities
	// (tests).
	Advisories Advisories
	// DryRun lists the environments in dry-run mode (decision 0100): the
	// policy's denials there are logged and returned as warnings on an
	// allow; every other check still denies.
	DryRun []string
	// VEX reads the VEX documents whose not_affected statements suppress
	// advisories for one artifact (decision 0096); it is read only when
	// an advisory affects the artifact. nil means no suppression.
	VEX VEX
	// TrustDomain is the deployment's trust domain, given to the policy.
	TrustDomain string
	Metrics     *telemetry.Metrics
	Logger      *slog.Logger
	// DeploymentMaxAge is the oldest allow decision a deployment may be
	// recorded under; zero means DefaultDeploymentMaxAge.
	DeploymentMaxAge time.Duration
	// Timeout bounds one admission, so that a hung dependency fails it
	// with ErrUnavailable instead of holding it forever. Zero means 30s.
	Timeout time.Duration
	// VerifyCache is how many artifact envelopes the verifier remembers
	// what their bytes alone establish (libs/verify.Cache: the parsed
	// envelope and statement, which signatures verified under which public
	// key) and, as many, the log checkpoints that opened under the log's
	// key (by their bytes and that key; decision 0117); every check that
	// can change, from key windows and revocations to the log key's
	// presence in the trust root and the inclusion proof, runs on every
	// admission. Zero means
	// DefaultVerifyCache; negative means none.
	VerifyCache int
	// Now and Rand default to time.Now and crypto/rand.Reader.
	Now  func() time.Time
	Rand io.Reader
}

// DefaultVerifyCache is how many artifact envelopes a Gate's verifier
// remembers by default: a few MiB of parsed envelopes and statements.
const DefaultVerifyCache = 4096

// Gate makes admission decisions. It is safe for concurrent use.
type Gate struct {
	cfg   Config
	trust *trust
	// deployments shares the rollback rule's reads; nil without it.
	deployments *deployments
	// verified is the verifier's cache; nil if Config.VerifyCache < 0.
	verified *verify.Cache
	// policy is the policy in force: Config.Policy until SetPolicy.
	policy atomic.Pointer[policy.Policy]
}

// New returns a Gate. It checks the configuration but contacts nothing.
func New(cfg Config) (*Gate, error) {
	var errs []error
	if cfg.Catalog == nil || cfg.Signer == nil || cfg.Publisher == nil {
		errs = append(errs, errors.New("catalog, signer and publisher are required"))
	}
	if cfg.Policy == nil {
		errs = append(errs, errors.New("a policy is required"))
	}
	if cfg.Metrics == nil || cfg.Logger == nil {
		errs = append(errs, errors.New("metrics and logger are required"))
	}
	if !strings.HasPrefix(cfg.VerifierID, "spiffe://") || cfg.TrustDomain == "" {
		errs = append(errs, errors.New("verifier SPIFFE ID and trust domain are required"))
	}
	if cfg.TrustRoot == nil {
		errs = append(errs, errors.New("a pinned trust root is required"))
	}
	if (cfg.Rollbacks == nil) != (cfg.Deployments == nil) {
		errs = append(errs, errors.New("the rollback rule needs both rollbacks and deployments"))
	}
	for _, env := range cfg.DryRun {
		if !validEnv(env) {
			errs = append(errs, fmt.Errorf("dry-run environment %q: want a name like prod or staging", trunc(env)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("admission config: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	g := &Gate{cfg: cfg, trust: newTrust(cfg.Signer, cfg.TrustRoot, cfg.Now, cfg.Logger)}
	switch {
	case cfg.VerifyCache == 0:
		g.verified = verify.NewCache(DefaultVerifyCache)
	case cfg.VerifyCache > 0:
		g.verified = verify.NewCache(cfg.VerifyCache)
	}
	if cfg.Deployments != nil {
		g.deployments = newDeployments(cfg.Deployments)
	}
	g.policy.Store(cfg.Policy)
	return g, nil
}

// SetPolicy puts p in force for the admissions that start after it
// returns; one already under way finishes with the policy it started
// with, and its decision names that one's digest and revision. A nil p
// changes nothing.
func (g *Gate) SetPolicy(p *policy.Policy) {
	if p != nil {
		g.policy.Store(p)
	}
}

// Policy returns the policy in force.
func (g *Gate) Policy() *policy.Policy { return g.policy.Load() }

// Admit verifies the evidence of the artifact req names, evaluates the
// policy, and returns the decision once it is signed and logged. A deny is a
// decision, not an error; that includes an artifact the catalog does not
// know. Errors wrap ErrInvalid for a malformed request, or ErrUnavailable if
// a dependency failed, in which case no decision was made: the gatekeeper
// never returns an unsigned or unlogged decision.
func (g *Gate) Admit(ctx context.Context, req Request) (*Decision, error) {
	if err := validate(req); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	id, err := g.newID()
	if err != nil {
		return nil, err
	}
	pol := g.policy.Load()
	d := &Decision{ID: id, PolicyDigest: pol.Digest(), PolicyRevision: pol.Revision(),
		DryRun: slices.Contains(g.cfg.DryRun, req.Environment),
		Name:   req.Name, Version: req.Version, Digest: req.Digest, Environment: req.Environment}
	// The decision is dated before the stops are read: a stop turned on
	// after the read has a later epoch, so the broker and edges refuse
	// this decision whatever it says.
	d.Time = g.cfg.Now().UTC()
	var stops []string
	if g.cfg.Stops != nil {
		stops = g.cfg.Stops.Denials(req.Environment)
		if req.Digest != "" {
			if r := g.cfg.Stops.Revoked(req.Digest); r != "" {
				stops = append(stops, r)
			}
		}
	}

	var ev *Evidence
	if len(stops) == 0 {
		ev, err = g.cfg.Catalog.Evidence(ctx, req.Name, req.Version, req.Digest)
	}
	var revoked string
	if err == nil && ev != nil && g.cfg.Stops != nil && digest.Valid(ev.Artifact.Digest) {
		// By name and version: the revocation is of the digest the catalog
		// binds them to; the revocation was read after the decision's time,
		// as the stops were.
		revoked = g.cfg.Stops.Revoked(ev.Artifact.Digest)
	}
	switch {
	case len(stops) > 0:
		// A stop denies without asking anyone: it must hold while the
		// catalog, signer or publisher misbehave.
		d.Reasons = stops
	case revoked != "":
		// A revocation denies in every environment, dry-run or not, and
		// whatever a rollback approval says: nothing else is evaluated.
		d.Name, d.Version, d.Digest = ev.Artifact.Name, ev.Artifact.Version, ev.Artifact.Digest
		d.Reasons = []string{revoked}
	case errors.Is(err, ErrNotFound):
		d.Reasons = []string{fmt.Sprintf("artifact %s is not in the catalog", describe(req))}
	case err != nil:
		return nil, fmt.Errorf("%w: get %s from the catalog: %w", ErrUnavailable, describe(req), err)
	default:
		if err := g.decide(ctx, pol, req, ev, d); err != nil {
			return nil, err
		}
	}
	d.Reasons = bound(d.Reasons)
	if err := g.record(ctx, req, d); err != nil {
		return nil, err
	}
	g.cfg.Logger.InfoContext(ctx, "admission decided",
		slog.String("decision", d.Verdict()), slog.String("decision_id", d.ID),
		slog.String("artifact", d.Name+"@"+d.Version), slog.String("digest", d.Digest),
		slog.String("environment", d.Environment), slog.Any("reasons", d.Reasons),
		slog.String("policy_digest", d.PolicyDigest), slog.String("policy_revision", d.PolicyRevision),
		slog.Bool("dry_run", d.DryRun), slog.String("real_decision", d.RealVerdict()),
		slog.Int64("log_index", d.LogIndex), slog.String("caller", req.Caller))
	return d, nil
}

// decide verifies the evidence and evaluates the policy, filling in d.
// Errors mean no decision can be made.
func (g *Gate) decide(ctx context.Context, pol *policy.Policy, req Request, ev *Evidence, d *Decision) error {
	a := ev.Artifact
	d.Name, d.Version = a.Name, a.Version
	if !digest.Valid(a.Digest) {
		// Nothing can be checked, or signed, about a malformed digest.
		g.cfg.Metrics.IntegrityFailures.WithLabelValues(whereEvidence).Inc()
		d.Reasons = []string{fmt.Sprintf("catalog record of %s has a malformed digest %q", describe(req), trunc(a.Digest))}
		return nil
	}
	d.Digest = a.Digest
	if len(ev.Envelope) > 0 {
		d.InputAttestations = append(d.InputAttestations, attest.InputAttestation(a.Name, a.Version, attest.AttestationProvenance, ev.Envelope))
	}
	ver, passed, err := g.verify(ctx, req, ev)
	if err != nil {
		return err
	}
	in := policy.Input{
		Artifact: policy.Artifact{
			Name: a.Name, Version: a.Version, Digest: a.Digest, Size: a.Size, Channel: a.Channel,
			BuilderID: a.BuilderID, SourceRepo: a.SourceRepo, SourceCommit: a.SourceCommit, CreatedAt: ev.CreatedAt,
		},
		Environment:  req.Environment,
		Verification: ver,
		TrustDomain:  g.cfg.TrustDomain,
	}
	// hard are the denials dry-run never softens: everything but the
	// policy's own deny set.
	var hard []string
	if ver.Passed() && g.cfg.SBOMs != nil && ev.SBOM != SBOMNone {
		// Only an artifact whose evidence verified has its SBOM read: the
		// SBOM is checked against that record.
		var sbomDenial string
		var envelope []byte
		in.SBOM, envelope, sbomDenial, err = g.readSBOM(ctx, a)
		if err != nil {
			return err
		}
		if len(envelope) > 0 {
			d.InputAttestations = append(d.InputAttestations, attest.InputAttestation(a.Name, a.Version, attest.AttestationSBOM, envelope))
		}
		if sbomDenial != "" {
			hard = append(hard, sbomDenial)
		}
	}
	var suppressed []string
	if in.SBOM.Attached && g.cfg.Advisories != nil {
		var r advisoryRead
		r, err = g.readAdvisories(ctx, a, in.SBOM.Components)
		in.SBOM.Vulnerabilities, suppressed = r.vulns, r.suppressed
		d.InputAttestations = append(d.InputAttestations, r.inputs...)
		advDenial := r.denial
		if err != nil {
			return err
		}
		if advDenial != "" {
			hard = append(hard, advDenial)
		}
	}
	denies, warns, perr := pol.Decide(ctx, in)
	if perr != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
		g.cfg.Logger.ErrorContext(ctx, "admission policy failed: denying", slog.String("policy", pol.Name()), slog.Any("error", perr))
		// A policy that cannot answer denies, dry-run or not: a dry run
		// reports the real decision, and there is none.
		hard = append(hard, fmt.Sprintf("admission policy %s could not be evaluated, so the gatekeeper denies: %v", pol.Name(), perr))
	}
	// The rollback rule is one more deny: a granted rollback approval
	// lifts only it, never the verification or the policy.
	if g.cfg.Rollbacks != nil {
		deployed, err := g.deployments.versions(ctx, a.Name, req.Environment)
		if err != nil {
			return fmt.Errorf("%w: the deployments of %s to %s: %w", ErrUnavailable, a.Name, req.Environment, err)
		}
		if r := g.cfg.Rollbacks.Denial(a.Name, a.Version, req.Environment, deployed); r != "" {
			hard = append(hard, r)
		}
	}
	// Verification failures deny whatever the policy says, in dry-run too.
	hard = dedupe(append(ver.Messages, hard...))
	denies = dedupe(denies)
	if d.DryRun && ver.Passed() && perr == nil && len(hard) == 0 && len(denies) > 0 {
		d.Allow, d.PolicyDenials = true, denies
		d.Reasons = append(passed, suppressed...)
		d.Reasons = append(d.Reasons, fmt.Sprintf("policy %s denies channel %q to environment %q, which is in dry-run mode: admitted, its denials follow as warnings", PolicyURI, a.Channel, req.Environment))
		for _, r := range denies {
			d.Reasons = append(d.Reasons, "warning: dry-run: "+r)
		}
	} else {
		d.Reasons = dedupe(append(hard, denies...))
		d.Allow = ver.Passed() && perr == nil && len(d.Reasons) == 0
		if d.Allow {
			d.Reasons = append(passed, suppressed...)
			d.Reasons = append(d.Reasons, fmt.Sprintf("policy %s admits channel %q to environment %q", PolicyURI, a.Channel, req.Environment))
		} else {
			// What VEX suppressed is part of the record either way.
			d.Reasons = append(d.Reasons, suppressed...)
		}
	}
	if d.Allow {
		for _, w := range warns {
			d.Reasons = append(d.Reasons, "warning: "+w)
		}
	}
	return nil
}

// readSBOM reads a's verified SBOM for the policy, and returns the
// envelope of its attestation if the catalog served one. An SBOM that
// fails verification is not used: the policy sees none and the returned
// denial refuses the admission, since the artifact's evidence has been
// tampered with. An error means the catalog could not answer: no decision
// is made.
func (g *Gate) readSBOM(ctx context.Context, a verify.Artifact) (policy.SBOM, []byte, string, error) {
	root, err := g.trust.current()
	if err != nil {
		// verify denied already; unreachable while ver.Passed().
		return policy.SBOM{}, nil, "", fmt.Errorf("%w: trust root: %w", ErrUnavailable, err)
	}
	// The signer's live revocations apply to the SBOM's signature as to
	// the artifact's.
	v, err := g.cfg.SBOMs.SBOM(ctx, a, root, verify.Options{
		Revoked: g.trust.revokedAt, RevokedBy: "the signer", AcceptBeforeRevocation: g.cfg.AcceptBeforeRevocation,
	})
	var envelope []byte
	if v != nil {
		envelope = v.Envelope
	}
	switch {
	case err == nil && v != nil:
		return policy.SBOM{Attached: true, Components: v.Components}, envelope, "", nil
	case errors.Is(err, ErrNotFound):
		return policy.SBOM{}, nil, "", nil
	case errors.Is(err, verify.ErrVerification):
		g.cfg.Metrics.IntegrityFailures.WithLabelValues(whereEvidence).Inc()
		return policy.SBOM{}, envelope, fmt.Sprintf("the SBOM of %s@%s failed verification, so it is not used and the gatekeeper denies: %v", a.Name, a.Version, err), nil
	case err == nil:
		return policy.SBOM{}, nil, "", fmt.Errorf("%w: the SBOM of %s@%s: no answer", ErrUnavailable, a.Name, a.Version)
	default:
		return policy.SBOM{}, nil, "", fmt.Errorf("%w: the SBOM of %s@%s: %w", ErrUnavailable, a.Name, a.Version, err)
	}
}

// advisoryRead is what readAdvisories found.
type advisoryRead struct {
	vulns []policy.Vulnerability
	// suppressed are the reasons naming each match a VEX suppressed, and
	// inputs the VEX entries that suppressed them, for the VSA.
	suppressed []string
	inputs     []attest.ResourceDescriptor
	denial     string
}

// maxVEXInputs bounds the VEX entries a decision record lists, leaving
// room for the provenance and SBOM in attest's bound.
const maxVEXInputs = 32

// readAdvisories reads the advisories affecting a's verified SBOM
// components for the policy, less those a verified not_affected VEX
// statement suppresses for a (returned as reasons naming the VEX entry).
// A candidate list the catalog cut short, or VEX entries that fail
// verification or could not all be listed, deny (the denial; a failed VEX
// suppresses nothing); any other failure to read them means no decision
// (ErrUnavailable): the vulnerability rules are never skipped.
func (g *Gate) readAdvisories(ctx context.Context, a verify.Artifact, comps []sbom.Component) (advisoryRead, error) {
	var r advisoryRead
	ms, err := g.cfg.Advisories.Advisories(ctx, a, comps)
	switch {
	case errors.Is(err, ErrIncomplete):
		r.denial = fmt.Sprintf("the advisories affecting %s@%s could not all be read, so the gatekeeper denies: %v", a.Name, a.Version, err)
		return r, nil
	case err != nil:
		return r, fmt.Errorf("%w: the advisories affecting %s@%s: %w", ErrUnavailable, a.Name, a.Version, err)
	}
	if len(ms) > 0 && g.cfg.VEX != nil {
		var sup []vex.Suppression
		ms, sup, r.denial, err = g.applyVEX(ctx, a, ms)
		if err != nil {
			return r, err
		}
		seen := map[int64]bool{}
		for _, s := range sup {
			r.suppressed = append(r.suppressed, suppression(a, s))
			if !seen[s.Index] && len(r.inputs) < maxVEXInputs {
				seen[s.Index] = true
				r.inputs = append(r.inputs, attest.VEXInputAttestation(a.Name, a.Version, s.Index, s.LeafSHA256))
			}
		}
	}
	r.vulns = make([]policy.Vulnerability, 0, len(ms))
	for _, m := range ms {
		r.vulns = append(r.vulns, policy.VulnerabilityOf(m))
	}
	return r, nil
}

// applyVEX removes from ms the matches that a's verified VEX entries
// suppress.
func (g *Gate) applyVEX(ctx context.Context, a verify.Artifact, ms []advisory.Match) ([]advisory.Match, []vex.Suppression, string, error) {
	root, err := g.trust.current()
	if err != nil {
		return nil, nil, "", fmt.Errorf("%w: trust root: %w", ErrUnavailable, err)
	}
	entries, err := g.cfg.VEX.VEX(ctx, a, root)
	switch {
	case errors.Is(err, verify.ErrVerification):
		g.cfg.Metrics.IntegrityFailures.WithLabelValues(whereEvidence).Inc()
		return ms, nil, fmt.Sprintf("the VEX statements about %s@%s failed verification, so none is used and the gatekeeper denies: %v", a.Name, a.Version, err), nil
	case errors.Is(err, ErrIncomplete):
		return ms, nil, fmt.Sprintf("the VEX statements about %s@%s could not all be read, so the gatekeeper denies: %v", a.Name, a.Version, err), nil
	case err != nil:
		return nil, nil, "", fmt.Errorf("%w: the VEX statements about %s@%s: %w", ErrUnavailable, a.Name, a.Version, err)
	}
	kept, sup := vex.Apply(ms, a.Digest, entries)
	return kept, sup, "", nil
}

// suppression is the reason recording one suppressed advisory.
func suppression(a verify.Artifact, s vex.Suppression) string {
	why := s.Justification
	if why == "" {
		why = "impact: " + s.ImpactStatement
	}
	return fmt.Sprintf("suppressed: %s affecting component %s is not_affected for %s@%s (%s) by VEX log entry %d, statement %d, from %s",
		s.Match.Advisory, s.Match.Component.PURL, a.Name, a.Version, trunc(why), s.Index, s.Statement, s.Actor)
}

// record has the decision signed as a VSA and logged. A decision about an
// artifact the catalog does not know, or whose record is malformed, lacks
// the digest, name or version a VSA must name, so it is logged but not
// signed; it is always a deny.
func (g *Gate) record(ctx context.Context, req Request, d *Decision) error {
	var envHash string
	signable := d.Digest != "" && d.Name != "" && d.Version != ""
	if d.Allow && !signable {
		// Unreachable: an allow needs a verified statement naming all three.
		return fmt.Errorf("decision %s: refusing to return an allow that cannot be signed", d.ID)
	}
	if signable {
		stmt, err := attest.NewVSA(attest.Decision{
			VerifierID: g.cfg.VerifierID, Name: d.Name, Version: d.Version, Digest: d.Digest,
			Environment: d.Environment, PolicyURI: PolicyURI, PolicyDigest: d.PolicyDigest, PolicyRevision: d.PolicyRevision,
			DecisionID: d.ID, Passed: d.Allow, DryRun: d.DryRun, Time: d.Time, Reasons: d.Reasons,
			InputAttestations: d.InputAttestations,
		})
		if err != nil {
			return fmt.Errorf("build decision record %s: %w", d.ID, err)
		}
		d.Envelope, err = g.cfg.Signer.SignDecision(ctx, stmt)
		if err != nil {
			return fmt.Errorf("%w: have decision %s signed: %w", ErrUnavailable, d.ID, err)
		}
		sum := sha256.Sum256(d.Envelope)
		envHash = hex.EncodeToString(sum[:])
	}
	var details bytes.Buffer
	enc := json.NewEncoder(&details)
	enc.SetEscapeHTML(false) // keep reasons with < > & at their size
	inputs := d.InputAttestations
	if inputs == nil {
		inputs = []attest.ResourceDescriptor{}
	}
	err := enc.Encode(eventDetails{
		Decision: d.Verdict(), DecisionID: d.ID,
		Name: d.Name, Version: d.Version, Digest: d.Digest, Environment: d.Environment, Reasons: d.Reasons,
		PolicyURI: PolicyURI, PolicyDigest: d.PolicyDigest, PolicyRevision: d.PolicyRevision,
		DryRun: d.DryRun, RealDecision: d.RealVerdict(), PolicyDenials: d.PolicyDenials,
		InputAttestations: inputs, EnvelopeSHA256: envHash, RequestedBy: req.Caller,
	})
	if err != nil {
		return fmt.Errorf("encode decision %s: %w", d.ID, err)
	}
	d.LogIndex, err = g.cfg.Catalog.AppendEvent(ctx, Event{Type: EventType, SubjectDigest: d.Digest, Details: bytes.TrimSpace(details.Bytes())})
	if err != nil {
		return fmt.Errorf("%w: log decision %s: %w", ErrUnavailable, d.ID, err)
	}
	return nil
}

// eventDetails are the details of an admission.decided log entry.
type eventDetails struct {
	Decision     string   `json:"decision"`
	DecisionID   string   `json:"decision_id"`
	Name         string   `json:"name,omitempty"`
	Version      string   `json:"version,omitempty"`
	Digest       string   `json:"digest,omitempty"`
	Environment  string   `json:"environment"`
	Reasons      []string `json:"reasons"`
	PolicyURI    string   `json:"policy_uri"`
	PolicyDigest string   `json:"policy_digest"`
	// PolicyRevision is the policy bundle's revision.
	PolicyRevision string `json:"policy_revision,omitempty"`
	// DryRun is set when the environment is in dry-run mode; then
	// RealDecision is the decision without it and PolicyDenials are the
	// policy's denials turned into warnings.
	DryRun        bool     `json:"dry_run"`
	RealDecision  string   `json:"real_decision"`
	PolicyDenials []string `json:"policy_denials,omitempty"`
	// InputAttestations are the VSA's: the attestations evaluated.
	InputAttestations []attest.ResourceDescriptor `json:"input_attestations"`
	// EnvelopeSHA256 binds the entry to the signed decision record, if
	// there is one.
	EnvelopeSHA256 string `json:"envelope_sha256,omitempty"`
	RequestedBy    string `json:"requested_by,omitempty"`
}

func (g *Gate) newID() (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(g.cfg.Rand, b[:]); err != nil {
		return "", fmt.Errorf("generate decision id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

const (
	maxNameLen   = 1024
	maxReasons   = 16
	maxReasonLen = 512
)

func validate(req Request) error {
	problems := validateArtifact(req)
	if !validEnv(req.Environment) {
		problems = append(problems, fmt.Sprintf("environment %q: want a name like prod or staging (lowercase letters, digits, '-' and '_', at most %d)", trunc(req.Environment), artifact.MaxEnvironmentLen))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	return nil
}

// Lookup returns the catalog's record of the artifact that name and
// version, or digest, name. Errors wrap ErrInvalid for a malformed
// request, ErrNotFound if the catalog has no such artifact, or
// ErrUnavailable if it could not answer.
func (g *Gate) Lookup(ctx context.Context, name, version, dgst string) (verify.Artifact, error) {
	req := Request{Name: name, Version: version, Digest: dgst}
	if problems := validateArtifact(req); len(problems) > 0 {
		return verify.Artifact{}, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	ev, err := g.cfg.Catalog.Evidence(ctx, name, version, dgst)
	switch {
	case errors.Is(err, ErrNotFound):
		return verify.Artifact{}, fmt.Errorf("artifact %q: %w in the catalog", trunc(describe(req)), ErrNotFound)
	case err != nil:
		return verify.Artifact{}, fmt.Errorf("%w: get %q from the catalog: %w", ErrUnavailable, trunc(describe(req)), err)
	case !digest.Valid(ev.Artifact.Digest) || (dgst != "" && ev.Artifact.Digest != dgst):
		return verify.Artifact{}, fmt.Errorf("%w: the catalog's record of %q has digest %q", ErrUnavailable, trunc(describe(req)), trunc(ev.Artifact.Digest))
	}
	return ev.Artifact, nil
}

func validateArtifact(req Request) []string {
	var problems []string
	switch {
	case req.Digest != "" && (req.Name != "" || req.Version != ""):
		problems = append(problems, "give either name and version, or digest, not both")
	case req.Digest != "":
		if !digest.Valid(req.Digest) {
			problems = append(problems, fmt.Sprintf("digest %q: want sha256:<64 lowercase hex>", trunc(req.Digest)))
		}
	case req.Name == "" || req.Version == "":
		problems = append(problems, "name and version (or digest) are required")
	}
	for what, s := range map[string]string{"name": req.Name, "version": req.Version} {
		if len(s) > maxNameLen || !utf8.ValidString(s) || strings.ContainsFunc(s, isControl) {
			problems = append(problems, fmt.Sprintf("%s: want at most %d bytes of printable UTF-8", what, maxNameLen))
		}
	}
	return problems
}

// ValidEnvironment reports whether env is a well-formed environment name.
func ValidEnvironment(env string) bool { return validEnv(env) }

func validEnv(env string) bool { return artifact.ValidEnvironment(env) }

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func describe(req Request) string {
	if req.Digest != "" {
		return req.Digest
	}
	return req.Name + "@" + req.Version
}

func dedupe(ss []string) []string {
	seen := map[string]bool{}
	out := ss[:0:0]
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// bound keeps the reasons small and printable enough for a log entry (at
// most 64 KiB): a policy or a malicious record must not make decisions
// unloggable, nor smuggle control characters into logs and terminals.
func bound(reasons []string) []string {
	out := make([]string, 0, min(len(reasons), maxReasons+1))
	for i, r := range reasons {
		if i == maxReasons {
			out = append(out, fmt.Sprintf("… and %d more reasons", len(reasons)-i))
			break
		}
		r = strings.Map(func(c rune) rune {
			if isControl(c) {
				return ' '
			}
			return c
		}, strings.ToValidUTF8(r, "\uFFFD"))
		if len(r) > maxReasonLen {
			r = strings.ToValidUTF8(r[:maxReasonLen], "") + "…"
		}
		out = append(out, r)
	}
	return out
}

// trunc is quote.Prefix under the name this package's messages use.
func trunc(s string) string { return quote.Prefix(s) }
