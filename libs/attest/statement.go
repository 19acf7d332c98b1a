package attest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
)

// Statement and predicate types.
const (
	StatementType           = "https://in-toto.io/Statement/v1"
	ProvenancePredicateType = "https://slsa.dev/provenance/v1"
	VSAPredicateType        = "https://slsa.dev/verification_summary/v1"
	// BuildType is the SLSA build type of Custody's publish step.
	BuildType = "https://custody.dev/publish/v1"
	// DecisionExtension is the VSA extension field (a URI, as SLSA
	// recommends) carrying Custody's decision id, environment and reasons.
	DecisionExtension = "https://custody.dev/decision/v1"
)

// Artifact is what a provenance statement says about one published artifact.
type Artifact struct {
	Name         string
	Version      string
	Digest       string // "sha256:<hex>"
	Channel      string
	BuilderID    string
	SourceRepo   string
	SourceCommit string
	StartedOn    time.Time
	FinishedOn   time.Time
	// Dependencies are the builder's claims of what went into the build
	// (buildDefinition.resolvedDependencies), checked by
	// ValidateDependencies; nil if none.
	Dependencies []ResourceDescriptor
}

// Decision is what a gatekeeper decision record (VSA) says.
type Decision struct {
	VerifierID  string
	Name        string
	Version     string
	Digest      string // "sha256:<hex>"
	Environment string
	PolicyURI   string
	// PolicyDigest is "<algorithm>:<hex>" of the policy: "dirHash:<hex>"
	// for a policy bundle (the in-toto DigestSet's dirHash), or
	// "sha256:<hex>" (records made before policy bundles).
	PolicyDigest string
	// PolicyRevision is the policy bundle's revision, if it has one.
	PolicyRevision string
	DecisionID     string
	Passed         bool
	// DryRun is set when the environment was in dry-run mode: the
	// policy's own denials were turned into warnings (see Reasons); a
	// verification failure or a stop still fails the decision.
	DryRun bool
	Time   time.Time
	// InputAttestations are the attestations the decision evaluated
	// (the VSA's inputAttestations): each names the DSSE envelope by its
	// SHA-256 and a URI (AttestationURI).
	InputAttestations []ResourceDescriptor
	Reasons           []string
}

// Kinds of input attestation, the query of AttestationURI.
const (
	AttestationProvenance = "provenance"
	AttestationSBOM       = "sbom"
	AttestationVEX        = "vex"
)

// Policy digest algorithms a decision record may carry.
const (
	PolicyDigestDirHash = "dirHash"
	PolicyDigestSHA256  = "sha256"
)

// AttestationURI names an attestation of kind about name@version in a
// VSA's inputAttestations: custody:<name>@<version>?attestation=<kind>.
// The catalog serves it (GetArtifact for the provenance, GetSBOM for the
// SBOM); the entry's digest says which envelope it was.
func AttestationURI(name, version, kind string) string {
	return "custody:" + name + "@" + version + "?attestation=" + url.QueryEscape(kind)
}

// InputAttestation describes the DSSE envelope of an attestation of kind
// about name@version for a VSA's inputAttestations.
func InputAttestation(name, version, kind string, envelope []byte) ResourceDescriptor {
	sum := sha256.Sum256(envelope)
	return ResourceDescriptor{URI: AttestationURI(name, version, kind), Digest: map[string]string{"sha256": hex.EncodeToString(sum[:])}}
}

// VEXInputAttestation describes a vex.added log entry about name@version
// for a VSA's inputAttestations: its URI names the entry's log index, its
// digest is the SHA-256 (lowercase hex) of the entry's leaf, which holds
// the OpenVEX document (decision 0096).
func VEXInputAttestation(name, version string, index int64, leafSHA256 string) ResourceDescriptor {
	return ResourceDescriptor{URI: AttestationURI(name, version, AttestationVEX) + "&log_index=" + strconv.FormatInt(index, 10),
		Digest: map[string]string{"sha256": leafSHA256}}
}

// maxInputAttestations bounds a decision record's inputAttestations.
const maxInputAttestations = 64

// splitPolicyDigest reads "<algorithm>:<hex>".
func splitPolicyDigest(d string) (string, string, error) {
	alg, h, ok := strings.Cut(d, ":")
	if !ok || (alg != PolicyDigestDirHash && alg != PolicyDigestSHA256) || !digest.ValidHex(h) {
		return "", "", fmt.Errorf("policy digest %q: want dirHash:<64 lowercase hex> or sha256:<64 lowercase hex>", quote.Prefix(d))
	}
	return alg, h, nil
}

// Subject is an in-toto resource descriptor naming what a statement is about.
type Subject struct {
	Name   string            `json:"name,omitempty"`
	Digest map[string]string `json:"digest"`
}

// Statement is a parsed in-toto Statement v1.
type Statement struct {
	Subjects      []Subject
	PredicateType string
	Predicate     json.RawMessage
}

type statementJSON struct {
	Type          string          `json:"_type"`
	Subject       []Subject       `json:"subject"`
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
}

type provenanceJSON struct {
	BuildDefinition struct {
		BuildType          string `json:"buildType"`
		ExternalParameters struct {
			Name    string `json:"name"`
			Version string `json:"version"`
			Channel string `json:"channel"`
			Source  struct {
				Repo   string `json:"repo,omitempty"`
				Commit string `json:"commit,omitempty"`
			} `json:"source"`
		} `json:"externalParameters"`
		ResolvedDependencies []ResourceDescriptor `json:"resolvedDependencies,omitempty"`
	} `json:"buildDefinition"`
	RunDetails struct {
		Builder struct {
			ID string `json:"id"`
		} `json:"builder"`
		Metadata struct {
			StartedOn  time.Time `json:"startedOn"`
			FinishedOn time.Time `json:"finishedOn"`
		} `json:"metadata"`
	} `json:"runDetails"`
}

type vsaJSON struct {
	Verifier struct {
		ID string `json:"id"`
	} `json:"verifier"`
	TimeVerified time.Time `json:"timeVerified"`
	ResourceURI  string    `json:"resourceUri"`
	Policy       struct {
		URI    string            `json:"uri"`
		Digest map[string]string `json:"digest"`
	} `json:"policy"`
	InputAttestations  []ResourceDescriptor `json:"inputAttestations,omitempty"`
	VerificationResult string               `json:"verificationResult"`
	VerifiedLevels     []string             `json:"verifiedLevels"`
	SLSAVersion        string               `json:"slsaVersion"`
	Custody            decisionExtra        `json:"https://custody.dev/decision/v1"`
}

type decisionExtra struct {
	DecisionID     string   `json:"decisionId"`
	Environment    string   `json:"environment"`
	PolicyRevision string   `json:"policyRevision,omitempty"`
	DryRun         bool     `json:"dryRun,omitempty"`
	Reasons        []string `json:"reasons"`
}

// NewProvenance returns an in-toto Statement v1 with an SLSA Provenance v1
// predicate for a, as JSON. BuilderID must be the builder's authenticated
// identity; a.Dependencies, the builder's claims, must pass
// ValidateDependencies.
func NewProvenance(a Artifact) ([]byte, error) {
	hexDigest, err := digest.Parse(a.Digest)
	if err != nil {
		return nil, err
	}
	if a.Name == "" || a.Version == "" || a.Channel == "" || a.BuilderID == "" {
		return nil, errors.New("provenance needs name, version, channel and builder id")
	}
	if err := ValidateDependencies(a.Dependencies); err != nil {
		return nil, err
	}
	var p provenanceJSON
	p.BuildDefinition.BuildType = BuildType
	ep := &p.BuildDefinition.ExternalParameters
	ep.Name, ep.Version, ep.Channel = a.Name, a.Version, a.Channel
	ep.Source.Repo, ep.Source.Commit = a.SourceRepo, a.SourceCommit
	p.BuildDefinition.ResolvedDependencies = a.Dependencies
	p.RunDetails.Builder.ID = a.BuilderID
	p.RunDetails.Metadata.StartedOn = a.StartedOn.UTC()
	p.RunDetails.Metadata.FinishedOn = a.FinishedOn.UTC()
	return marshalStatement(a.Name, hexDigest, ProvenancePredicateType, p)
}

// NewVSA returns an in-toto Statement v1 with an SLSA Verification Summary
// predicate recording d, as JSON, following the VSA v1 field rules on an
// allow and a deny alike: verifier.id, timeVerified, resourceUri, policy
// {uri, digest}, inputAttestations (each with a digest), verificationResult
// PASSED or FAILED, and verifiedLevels ["SLSA_BUILD_LEVEL_2"] on a pass,
// ["FAILED"] on a fail.
func NewVSA(d Decision) ([]byte, error) {
	hexDigest, err := digest.Parse(d.Digest)
	if err != nil {
		return nil, err
	}
	policyAlg, policyHex, err := splitPolicyDigest(d.PolicyDigest)
	if err != nil {
		return nil, err
	}
	if d.VerifierID == "" || d.Name == "" || d.Version == "" || d.Environment == "" || d.DecisionID == "" || d.PolicyURI == "" || d.Time.IsZero() {
		return nil, errors.New("decision needs verifier id, name, version, environment, decision id, policy uri and time")
	}
	if err := validInputAttestations(d.InputAttestations); err != nil {
		return nil, err
	}
	var v vsaJSON
	v.Verifier.ID = d.VerifierID
	v.TimeVerified = d.Time.UTC()
	v.ResourceURI = ResourceURI(d.Name, d.Version, d.Environment)
	v.Policy.URI = d.PolicyURI
	v.Policy.Digest = map[string]string{policyAlg: policyHex}
	v.InputAttestations = d.InputAttestations
	v.VerificationResult = "FAILED"
	v.VerifiedLevels = []string{"FAILED"}
	if d.Passed {
		v.VerificationResult = "PASSED"
		v.VerifiedLevels = []string{"SLSA_BUILD_LEVEL_2"}
	}
	v.SLSAVersion = "1.0"
	v.Custody = decisionExtra{DecisionID: d.DecisionID, Environment: d.Environment, PolicyRevision: d.PolicyRevision, DryRun: d.DryRun, Reasons: d.Reasons}
	if v.Custody.Reasons == nil {
		v.Custody.Reasons = []string{}
	}
	return marshalStatement(d.Name, hexDigest, VSAPredicateType, v)
}

// ResourceURI names an artifact deployed to an environment in a VSA.
func ResourceURI(name, version, env string) string {
	return "custody:" + name + "@" + version + "?env=" + url.QueryEscape(env)
}

func marshalStatement(name, hexDigest, predicateType string, predicate any) ([]byte, error) {
	// One pass: the predicate encoded in place gives the bytes that
	// encoding it first and embedding it as raw JSON would, without the
	// second copy and the validation and compaction of it (decision 0117).
	return json.Marshal(statementOut{
		Type:          StatementType,
		Subject:       []Subject{{Name: name, Digest: map[string]string{"sha256": hexDigest}}},
		PredicateType: predicateType,
		Predicate:     predicate,
	})
}

// statementOut is statementJSON with the predicate still a value, for
// encoding.
type statementOut struct {
	Type          string    `json:"_type"`
	Subject       []Subject `json:"subject"`
	PredicateType string    `json:"predicateType"`
	Predicate     any       `json:"predicate"`
}

// ParseStatement parses an in-toto Statement v1 of at most MaxEnvelopeSize
// bytes. It checks the statement type and that every subject has a digest;
// what the predicate says is checked by Artifact and Decision.
func ParseStatement(b []byte) (*Statement, error) {
	var sj statementJSON
	if err := strictjson.Decode(b, MaxEnvelopeSize, &sj); err != nil {
		return nil, fmt.Errorf("%w: statement: %v", ErrMalformed, err)
	}
	if sj.Type != StatementType {
		return nil, fmt.Errorf("%w: statement _type %q, want %s", ErrMalformed, quote.Prefix(sj.Type), StatementType)
	}
	if len(sj.Subject) == 0 {
		return nil, fmt.Errorf("%w: statement has no subject", ErrMalformed)
	}
	for i, s := range sj.Subject {
		if len(s.Digest) == 0 {
			return nil, fmt.Errorf("%w: subject %d has no digest", ErrMalformed, i)
		}
	}
	if sj.PredicateType == "" || len(sj.Predicate) == 0 {
		return nil, fmt.Errorf("%w: statement has no predicate", ErrMalformed)
	}
	return &Statement{Subjects: sj.Subject, PredicateType: sj.PredicateType, Predicate: sj.Predicate}, nil
}

// single returns the one subject's name and "sha256:<hex>" digest.
func (s *Statement) single() (string, string, error) {
	if len(s.Subjects) != 1 {
		return "", "", fmt.Errorf("%w: %d subjects, want exactly one", ErrMalformed, len(s.Subjects))
	}
	sub := s.Subjects[0]
	h, ok := sub.Digest["sha256"]
	if !ok {
		return "", "", fmt.Errorf("%w: subject has no sha256 digest", ErrMalformed)
	}
	d := digest.Prefix + h
	if _, err := digest.Parse(d); err != nil {
		return "", "", fmt.Errorf("%w: subject digest: %v", ErrMalformed, err)
	}
	return sub.Name, d, nil
}

// Artifact reads a provenance statement back. It fails unless the predicate
// is SLSA Provenance v1 of Custody's build type with exactly one sha256
// subject whose name matches the external parameters.
func (s *Statement) Artifact() (*Artifact, error) {
	if s.PredicateType != ProvenancePredicateType {
		return nil, fmt.Errorf("%w: predicate type %q, want %s", ErrMalformed, quote.Prefix(s.PredicateType), ProvenancePredicateType)
	}
	name, subjectDigest, err := s.single()
	if err != nil {
		return nil, err
	}
	var p provenanceJSON
	if err := strictjson.Decode(s.Predicate, MaxEnvelopeSize, &p); err != nil {
		return nil, fmt.Errorf("%w: provenance: %v", ErrMalformed, err)
	}
	ep := p.BuildDefinition.ExternalParameters
	switch {
	case p.BuildDefinition.BuildType != BuildType:
		return nil, fmt.Errorf("%w: build type %q, want %s", ErrMalformed, quote.Prefix(p.BuildDefinition.BuildType), BuildType)
	case ep.Name != name:
		return nil, fmt.Errorf("%w: subject name %q differs from provenance name %q", ErrMalformed, quote.Prefix(name), quote.Prefix(ep.Name))
	case ep.Version == "" || ep.Channel == "":
		return nil, fmt.Errorf("%w: provenance has no version or channel", ErrMalformed)
	case p.RunDetails.Builder.ID == "":
		return nil, fmt.Errorf("%w: provenance has no builder.id", ErrMalformed)
	}
	if err := ValidateDependencies(p.BuildDefinition.ResolvedDependencies); err != nil {
		return nil, err
	}
	return &Artifact{
		Name: name, Version: ep.Version, Digest: subjectDigest, Channel: ep.Channel,
		BuilderID: p.RunDetails.Builder.ID, SourceRepo: ep.Source.Repo, SourceCommit: ep.Source.Commit,
		StartedOn: p.RunDetails.Metadata.StartedOn, FinishedOn: p.RunDetails.Metadata.FinishedOn,
		Dependencies: p.BuildDefinition.ResolvedDependencies,
	}, nil
}

// Decision reads a decision record back. It fails unless the predicate is a
// VSA v1 with one sha256 subject, a resource URI naming the artifact and
// environment, and a known verification result.
func (s *Statement) Decision() (*Decision, error) {
	if s.PredicateType != VSAPredicateType {
		return nil, fmt.Errorf("%w: predicate type %q, want %s", ErrMalformed, quote.Prefix(s.PredicateType), VSAPredicateType)
	}
	name, subjectDigest, err := s.single()
	if err != nil {
		return nil, err
	}
	var v vsaJSON
	if err := strictjson.Decode(s.Predicate, MaxEnvelopeSize, &v); err != nil {
		return nil, fmt.Errorf("%w: verification summary: %v", ErrMalformed, err)
	}
	d := &Decision{
		VerifierID: v.Verifier.ID, Digest: subjectDigest, PolicyURI: v.Policy.URI, Time: v.TimeVerified,
		DecisionID: v.Custody.DecisionID, Environment: v.Custody.Environment, Reasons: v.Custody.Reasons,
		PolicyRevision: v.Custody.PolicyRevision, DryRun: v.Custody.DryRun, InputAttestations: v.InputAttestations,
	}
	if err := validInputAttestations(d.InputAttestations); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch v.VerificationResult {
	case "PASSED":
		d.Passed = true
	case "FAILED":
	default:
		return nil, fmt.Errorf("%w: verificationResult %q, want PASSED or FAILED", ErrMalformed, quote.Prefix(v.VerificationResult))
	}
	for _, alg := range []string{PolicyDigestDirHash, PolicyDigestSHA256} {
		if h, ok := v.Policy.Digest[alg]; ok {
			if !digest.ValidHex(h) {
				return nil, fmt.Errorf("%w: policy digest %s %q: want 64 lowercase hex", ErrMalformed, alg, quote.Prefix(h))
			}
			d.PolicyDigest = alg + ":" + h
			break
		}
	}
	switch {
	case d.Passed && (len(v.VerifiedLevels) != 1 || v.VerifiedLevels[0] == "FAILED"):
		return nil, fmt.Errorf("%w: a PASSED decision with verifiedLevels %q", ErrMalformed, quote.Prefix(strings.Join(v.VerifiedLevels, ",")))
	case !d.Passed && slices.ContainsFunc(v.VerifiedLevels, func(l string) bool { return strings.HasPrefix(l, "SLSA_") }):
		return nil, fmt.Errorf("%w: a FAILED decision claims verifiedLevels %q", ErrMalformed, quote.Prefix(strings.Join(v.VerifiedLevels, ",")))
	}
	rest, ok := strings.CutPrefix(v.ResourceURI, "custody:")
	nv, env, ok2 := strings.Cut(rest, "?env=")
	at := strings.LastIndex(nv, "@")
	if !ok || !ok2 || at <= 0 {
		return nil, fmt.Errorf("%w: resourceUri %q, want custody:<name>@<version>?env=<env>", ErrMalformed, quote.Prefix(v.ResourceURI))
	}
	d.Name, d.Version = nv[:at], nv[at+1:]
	if e, err := url.QueryUnescape(env); err != nil || e != d.Environment {
		return nil, fmt.Errorf("%w: resourceUri environment %q differs from %q", ErrMalformed, quote.Prefix(env), quote.Prefix(d.Environment))
	}
	if d.Name != name {
		return nil, fmt.Errorf("%w: subject name %q differs from resourceUri name %q", ErrMalformed, quote.Prefix(name), quote.Prefix(d.Name))
	}
	if d.VerifierID == "" || d.DecisionID == "" {
		return nil, fmt.Errorf("%w: decision has no verifier id or decision id", ErrMalformed)
	}
	return d, nil
}

// validInputAttestations checks a VSA's inputAttestations: at most
// maxInputAttestations, each with a URI and a valid sha256 digest.
func validInputAttestations(rs []ResourceDescriptor) error {
	if len(rs) > maxInputAttestations {
		return fmt.Errorf("%d input attestations, more than %d", len(rs), maxInputAttestations)
	}
	for i, r := range rs {
		if r.URI == "" || len(r.URI) > MaxDependencyURILen || !digest.ValidHex(r.Digest["sha256"]) {
			return fmt.Errorf("input attestation %d: want a uri and a sha256 digest of its envelope", i)
		}
	}
	return nil
}
