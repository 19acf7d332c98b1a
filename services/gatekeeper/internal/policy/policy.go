// Package policy evaluates the Rego admission policy with OPA.
package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/custody-dev/custody/libs/advisory"
	"github.com/custody-dev/custody/libs/sbom"
)

// Package is the Rego package every admission policy must declare.
const Package = "custody.admission"

// query is what the gatekeeper asks: the set of reasons to deny, and of
// warnings (warnQuery) if the policy defines warn.
const (
	query     = "data." + Package + ".deny"
	warnQuery = "data." + Package + ".warn"
)

// ErrPolicy is returned (wrapped) by Evaluate when the policy cannot give
// an answer: an evaluation error, or deny undefined or not a set. Callers
// must treat it as a deny.
var ErrPolicy = errors.New("admission policy failed")

// unsafeBuiltins are refused at compile time: a policy decides from its
// input alone, so it may not reach the network or read the process's
// environment (which could leak secrets into deny reasons).
var unsafeBuiltins = map[string]struct{}{
	"http.send":          {},
	"net.lookup_ip_addr": {},
	"opa.runtime":        {},
}

// Input is the document a policy evaluates, as input.
type Input struct {
	Artifact     Artifact     `json:"artifact"`
	Environment  string       `json:"environment"`
	Verification Verification `json:"verification"`
	TrustDomain  string       `json:"trust_domain"`
	SBOM         SBOM         `json:"sbom"`
}

// SBOM is the artifact's SBOM as far as the gatekeeper verified it
// (libs/verify.SBOMComponents): Attached is false when the artifact has
// none, or when its evidence failed verification and the SBOM was not
// read. Components are parsed from the attested document.
type SBOM struct {
	Attached   bool             `json:"attached"`
	Components []sbom.Component `json:"components"`
	// Vulnerabilities are the advisories affecting Components (decision
	// 0094), one per advisory and component.
	Vulnerabilities []Vulnerability `json:"vulnerabilities"`
}

// Vulnerability is one advisory affecting one component of the verified
// SBOM, as the policy sees it.
type Vulnerability struct {
	// Advisory is the OSV id; Severity NONE, LOW, MEDIUM, HIGH, CRITICAL
	// or UNKNOWN (computed from the advisory's document).
	Advisory string `json:"advisory"`
	Severity string `json:"severity"`
	// Component is the component's purl, else name@version.
	Component string `json:"component"`
	// Reason is why its version is affected; Uncertain is set when the
	// version could not be compared and it is reported as affected.
	Reason    string `json:"reason"`
	Uncertain bool   `json:"uncertain"`
}

// VulnerabilityOf is m as the policy sees it.
func VulnerabilityOf(m advisory.Match) Vulnerability {
	c := m.Component.PURL
	if c == "" {
		c = m.Component.Name + "@" + m.Component.Version
	}
	return Vulnerability{Advisory: m.Advisory, Severity: m.Severity.String(), Component: c, Reason: m.Reason, Uncertain: m.Uncertain}
}

// Artifact is the catalog's record of the artifact being admitted.
type Artifact struct {
	Name         string    `json:"name"`
	Version      string    `json:"version"`
	Digest       string    `json:"digest"`
	Size         int64     `json:"size"`
	Channel      string    `json:"channel"`
	BuilderID    string    `json:"builder_id"`
	SourceRepo   string    `json:"source_repo"`
	SourceCommit string    `json:"source_commit"`
	CreatedAt    time.Time `json:"created_at"`
}

// Verification is the outcome of the gatekeeper's checks of the evidence.
// Messages explains every check that failed.
type Verification struct {
	Signature     bool     `json:"signature"`
	SubjectMatch  bool     `json:"subject_match"`
	LogInclusion  bool     `json:"log_inclusion"`
	Checkpoint    bool     `json:"checkpoint"`
	BlobIntegrity bool     `json:"blob_integrity"`
	Messages      []string `json:"messages"`
}

// Passed reports whether every check passed.
func (v Verification) Passed() bool {
	return v.Signature && v.SubjectMatch && v.LogInclusion && v.Checkpoint && v.BlobIntegrity
}

// Policy is a compiled admission policy. It is safe for concurrent use.
type Policy struct {
	name     string
	digest   string
	revision string
	query    rego.PreparedEvalQuery
	warns    bool
	now      func() time.Time
}

// Option configures New.
type Option func(*Policy)

// WithClock sets the clock behind the policy's time builtins (time.now_ns).
func WithClock(now func() time.Time) Option {
	return func(p *Policy) { p.now = now }
}

// New compiles src, a Rego v1 module of package custody.admission that
// defines deny, and prepares it for evaluation, as a bundle of that one
// file without a manifest (no revision): for tests and tools; the
// gatekeeper loads bundles (LoadBundle). name names the module in errors
// and the digest. It fails if the module does not parse or compile,
// declares another package, has no deny rule, or calls a builtin that
// does I/O.
func New(ctx context.Context, name string, src []byte, opts ...Option) (*Policy, error) {
	mod, err := ast.ParseModuleWithOpts(name, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("parse policy %s: %w", name, err)
	}
	if got := mod.Package.Path.String(); got != "data."+Package {
		return nil, fmt.Errorf("policy %s: package is %s, want %s", name, got, Package)
	}
	sum, err := dirHashOf([]bundleFile{{name: path.Base(name), data: src}})
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", name, err)
	}
	return compile(ctx, name, []*ast.Module{mod}, nil, DigestAlgorithm+":"+sum, opts...)
}

// compile prepares the modules, with data as data, for evaluation. One of
// them must be of package custody.admission and the package must define
// deny.
func compile(ctx context.Context, name string, mods []*ast.Module, data map[string]any, dgst string, opts ...Option) (*Policy, error) {
	hasRule := func(rule string) bool {
		return slices.ContainsFunc(mods, func(m *ast.Module) bool {
			return m.Package.Path.String() == "data."+Package &&
				slices.ContainsFunc(m.Rules, func(r *ast.Rule) bool { return r.Head.Name.String() == rule })
		})
	}
	if !slices.ContainsFunc(mods, func(m *ast.Module) bool { return m.Package.Path.String() == "data."+Package }) {
		return nil, fmt.Errorf("policy %s: no module of package %s", name, Package)
	}
	if !hasRule("deny") {
		return nil, fmt.Errorf("policy %s: no deny rule in package %s: define `deny contains msg if { ... }` with one message per reason to refuse", name, Package)
	}
	p := &Policy{name: name, digest: dgst, now: time.Now}
	for _, o := range opts {
		o(p)
	}
	q := query
	// warn is optional: a policy without it has no warnings.
	p.warns = hasRule("warn")
	if p.warns {
		q = query + "; " + warnQuery
	}
	args := []func(*rego.Rego){
		rego.Query(q),
		rego.SetRegoVersion(ast.RegoV1),
		rego.Strict(true),
		rego.StrictBuiltinErrors(true),
		rego.UnsafeBuiltins(unsafeBuiltins),
	}
	for _, m := range mods {
		args = append(args, rego.ParsedModule(m))
	}
	if len(data) > 0 {
		args = append(args, rego.Store(inmem.NewFromObject(data)))
	}
	var err error
	p.query, err = rego.New(args...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("compile policy %s: %w", name, err)
	}
	return p, nil
}

// Name returns the name the policy was compiled under.
func (p *Policy) Name() string { return p.name }

// Digest returns the bundle's digest, "dirHash:<hex>" (DigestAlgorithm).
func (p *Policy) Digest() string { return p.digest }

// Revision returns the bundle's revision (its .manifest's); "" for a
// policy made by New.
func (p *Policy) Revision() string { return p.revision }

// Evaluate returns every reason the policy gives to deny in; none means the
// policy admits. Errors wrap ErrPolicy, or are ctx's error; either way the
// caller must deny.
func (p *Policy) Evaluate(ctx context.Context, in Input) ([]string, error) {
	deny, _, err := p.Decide(ctx, in)
	return deny, err
}

// Decide is Evaluate that also returns the policy's warnings (its warn
// set): things to report on an admission that do not deny it.
func (p *Policy) Decide(ctx context.Context, in Input) (deny, warn []string, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if in.Verification.Messages == nil {
		// null would be a type error in the policy, not an empty list.
		in.Verification.Messages = []string{}
	}
	if in.SBOM.Components == nil {
		in.SBOM.Components = []sbom.Component{}
	}
	if in.SBOM.Vulnerabilities == nil {
		in.SBOM.Vulnerabilities = []Vulnerability{}
	}
	growStack()
	doc, err := in.value()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: encode input: %v", ErrPolicy, err)
	}
	rs, err := p.query.Eval(ctx, rego.EvalParsedInput(doc), rego.EvalTime(p.now()))
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("%w: evaluate %s: %v", ErrPolicy, p.name, err)
	}
	want := 1
	if p.warns {
		want = 2
	}
	if len(rs) != 1 || len(rs[0].Expressions) != want {
		return nil, nil, fmt.Errorf("%w: %s is undefined in %s", ErrPolicy, query, p.name)
	}
	deny, err = p.messages(query, rs[0].Expressions[0].Value)
	if err != nil {
		return nil, nil, err
	}
	if p.warns {
		if warn, err = p.messages(warnQuery, rs[0].Expressions[1].Value); err != nil {
			return nil, nil, err
		}
	}
	return deny, warn, nil
}

// messages reads the set of messages q evaluated to.
func (p *Policy) messages(q string, v any) ([]string, error) {
	set, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: %s in %s is %T, want a set of messages", ErrPolicy, q, p.name, v)
	}
	out := make([]string, 0, len(set))
	for _, v := range set {
		s, ok := v.(string)
		if !ok {
			// Still a message; show it as the policy wrote it.
			b, _ := json.Marshal(v)
			s = string(b)
		}
		out = append(out, s)
	}
	return out, nil
}

// evalStack is about the stack an evaluation of the default policy
// reaches: topdown recurses deeply.
const evalStack = 64 << 10

// growStack grows the calling goroutine's stack to evalStack at once,
// while it is still shallow. A gRPC handler runs on a new goroutine with
// a small stack; left to the evaluation, the stack grows doubling by
// doubling deep inside topdown, and each doubling copies and re-adjusts
// every frame: about 5 % of the admission benchmark's CPU in its profile
// (decision 0108). A policy that recurses deeper still grows from here.
//
//go:noinline
func growStack() {
	var b [evalStack]byte
	stackSink(b[:])
}

//go:noinline
func stackSink(b []byte) { b[0] = 0 }
