// Package vex parses OpenVEX v0.2.0 documents and decides which advisory
// matches their statements suppress.
package vex

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/package-url/packageurl-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
)

// Context is the @context of the OpenVEX version Custody reads.
const Context = "https://openvex.dev/ns/v0.2.0"

// Bounds on one document (decision 0095). A document is logged inside one
// log entry, so it must leave room in tlog.MaxEntrySize for the entry's
// other fields.
const (
	MaxDocBytes      = 32 << 10
	MaxStatements    = 64
	MaxProducts      = 16
	MaxSubcomponents = 64
	MaxAliases       = 16
	// MaxNameLen bounds a vulnerability name or alias, MaxTextLen every
	// other string.
	MaxNameLen = 128
	MaxTextLen = 4096
)

// Status is a statement's status.
type Status string

// The four statuses of OpenVEX.
const (
	NotAffected        Status = "not_affected"
	Affected           Status = "affected"
	Fixed              Status = "fixed"
	UnderInvestigation Status = "under_investigation"
)

// justifications are OpenVEX's five justification labels.
var justifications = map[string]bool{
	"component_not_present":                             true,
	"vulnerable_code_not_present":                       true,
	"vulnerable_code_not_in_execute_path":               true,
	"vulnerable_code_cannot_be_controlled_by_adversary": true,
	"inline_mitigations_already_exist":                  true,
}

// identifierKeys and hashKeys are the keys OpenVEX defines for a
// component's identifiers and hashes.
var (
	identifierKeys = map[string]bool{"purl": true, "cpe22": true, "cpe23": true}
	hashKeys       = map[string]bool{
		"md5": true, "sha1": true, "sha-256": true, "sha-384": true, "sha-512": true,
		"sha3-224": true, "sha3-256": true, "sha3-384": true, "sha3-512": true,
		"blake2s-256": true, "blake2b-256": true, "blake2b-512": true, "blake3": true,
	}
)

// Document is an OpenVEX v0.2.0 document: every field the specification
// defines, and no other.
type Document struct {
	Context     string      `json:"@context"`
	ID          string      `json:"@id"`
	Author      string      `json:"author"`
	Role        string      `json:"role,omitempty"`
	Timestamp   time.Time   `json:"timestamp"`
	LastUpdated *time.Time  `json:"last_updated,omitempty"`
	Version     int         `json:"version"`
	Tooling     string      `json:"tooling,omitempty"`
	Statements  []Statement `json:"statements"`
}

// Statement is one VEX statement: the status of a vulnerability in
// products.
type Statement struct {
	ID                       string        `json:"@id,omitempty"`
	Version                  int           `json:"version,omitempty"`
	Vulnerability            Vulnerability `json:"vulnerability"`
	Timestamp                *time.Time    `json:"timestamp,omitempty"`
	LastUpdated              *time.Time    `json:"last_updated,omitempty"`
	Products                 []Product     `json:"products"`
	Status                   Status        `json:"status"`
	Supplier                 string        `json:"supplier,omitempty"`
	StatusNotes              string        `json:"status_notes,omitempty"`
	Justification            string        `json:"justification,omitempty"`
	ImpactStatement          string        `json:"impact_statement,omitempty"`
	ActionStatement          string        `json:"action_statement,omitempty"`
	ActionStatementTimestamp *time.Time    `json:"action_statement_timestamp,omitempty"`
}

// Vulnerability names the vulnerability a statement is about.
type Vulnerability struct {
	ID          string   `json:"@id,omitempty"`
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Aliases     []string `json:"aliases,omitempty"`
}

// Product is a component a statement is about, with optional
// subcomponents that narrow it.
type Product struct {
	ID            string            `json:"@id,omitempty"`
	Identifiers   map[string]string `json:"identifiers,omitempty"`
	Hashes        map[string]string `json:"hashes,omitempty"`
	Subcomponents []Component       `json:"subcomponents,omitempty"`
}

// Component is a subcomponent of a product.
type Component struct {
	ID          string            `json:"@id,omitempty"`
	Identifiers map[string]string `json:"identifiers,omitempty"`
	Hashes      map[string]string `json:"hashes,omitempty"`
}

// ErrInvalid is matched (errors.Is) by every error of Parse and About.
// Such errors carry gRPC InvalidArgument.
var ErrInvalid = errors.New("invalid VEX document")

type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return "invalid VEX document: " + e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }
func (e *invalidError) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Error())
}

const maxErrLen = 300

func invalid(format string, args ...any) error {
	return &invalidError{msg: quote.Clip(fmt.Sprintf(format, args...), maxErrLen)}
}

// Parse decodes and validates an OpenVEX v0.2.0 document: at most
// MaxDocBytes of strict JSON (libs/strictjson: no unknown or repeated
// key), @context exactly Context, an @id, an author, a timestamp, a
// version of at least 1, and 1 to MaxStatements statements, each with a
// vulnerability name, 1 to MaxProducts products that each identify
// something, a known status, a not_affected statement with a justification
// (one of OpenVEX's labels) or an impact statement, an affected statement
// with an action statement, and subcomponents that are package URLs.
// Errors match ErrInvalid.
func Parse(b []byte) (*Document, error) {
	if len(b) > MaxDocBytes {
		return nil, invalid("%d bytes, more than %d: one document holds the statements about one artifact", len(b), MaxDocBytes)
	}
	var d Document
	if err := strictjson.Decode(b, MaxDocBytes, &d); err != nil {
		return nil, invalid("%v", err)
	}
	if err := d.validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

func (d *Document) validate() error {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if d.Context != Context {
		add("@context %q: want %q (OpenVEX v0.2.0)", quote.Prefix(d.Context), Context)
	}
	if d.ID == "" {
		add("@id is missing")
	}
	if d.Author == "" {
		add("author is missing")
	}
	if d.Timestamp.IsZero() {
		add("timestamp is missing")
	}
	if d.Version < 1 {
		add("version %d: want 1 or more", d.Version)
	}
	for _, s := range []string{d.ID, d.Author, d.Role, d.Tooling} {
		if len(s) > MaxTextLen {
			add("a document field is more than %d bytes", MaxTextLen)
		}
	}
	switch n := len(d.Statements); {
	case n == 0:
		add("no statements")
	case n > MaxStatements:
		add("%d statements, more than %d", n, MaxStatements)
	default:
		for i := range d.Statements {
			if err := d.Statements[i].validate(); err != "" {
				add("statement %d: %s", i+1, err)
			}
		}
	}
	if len(errs) > 0 {
		return invalid("%s", strings.Join(errs, "; "))
	}
	return nil
}

func (s *Statement) validate() string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	v := s.Vulnerability
	if v.Name == "" || len(v.Name) > MaxNameLen {
		add("vulnerability.name %q: want the advisory id or an alias, 1-%d bytes", quote.Prefix(v.Name), MaxNameLen)
	}
	if len(v.Aliases) > MaxAliases {
		add("%d aliases, more than %d", len(v.Aliases), MaxAliases)
	}
	for _, a := range v.Aliases {
		if a == "" || len(a) > MaxNameLen {
			add("alias %q: want 1-%d bytes", quote.Prefix(a), MaxNameLen)
		}
	}
	for _, t := range []string{s.ID, v.ID, v.Description, s.Supplier, s.StatusNotes, s.Justification, s.ImpactStatement, s.ActionStatement} {
		if len(t) > MaxTextLen {
			add("a field is more than %d bytes", MaxTextLen)
		}
	}
	switch s.Status {
	case NotAffected:
		if s.Justification == "" && s.ImpactStatement == "" {
			add("status not_affected needs a justification or an impact_statement")
		}
	case Affected:
		if s.ActionStatement == "" {
			add("status affected needs an action_statement")
		}
	case Fixed, UnderInvestigation:
	default:
		add("status %q: want not_affected, affected, fixed or under_investigation", quote.Prefix(string(s.Status)))
	}
	if s.Justification != "" {
		if !justifications[s.Justification] {
			add("justification %q is not one of OpenVEX's labels", quote.Prefix(s.Justification))
		}
		if s.Status != NotAffected {
			add("a justification belongs to a not_affected statement only")
		}
	}
	switch n := len(s.Products); {
	case n == 0:
		add("no products")
	case n > MaxProducts:
		add("%d products, more than %d", n, MaxProducts)
	}
	for j, p := range s.Products {
		if err := checkComponent(p.ID, p.Identifiers, p.Hashes); err != "" {
			add("product %d: %s", j+1, err)
		}
		if len(p.Subcomponents) > MaxSubcomponents {
			add("product %d: %d subcomponents, more than %d", j+1, len(p.Subcomponents), MaxSubcomponents)
			continue
		}
		for k, c := range p.Subcomponents {
			if err := checkComponent(c.ID, c.Identifiers, c.Hashes); err != "" {
				add("product %d subcomponent %d: %s", j+1, k+1, err)
			} else if _, ok := c.purl(); !ok {
				add("product %d subcomponent %d: want a package URL (pkg:...) as @id or identifiers.purl, to match SBOM components", j+1, k+1)
			}
		}
	}
	return strings.Join(errs, "; ")
}

func checkComponent(id string, ids, hashes map[string]string) string {
	if id == "" && len(ids) == 0 && len(hashes) == 0 {
		return "names nothing: give @id, identifiers or hashes"
	}
	if len(id) > MaxTextLen {
		return "@id too long"
	}
	for k, v := range ids {
		if !identifierKeys[k] {
			return fmt.Sprintf("identifier %q: want purl, cpe22 or cpe23", quote.Prefix(k))
		}
		if v == "" || len(v) > MaxTextLen {
			return fmt.Sprintf("identifier %s: empty or too long", k)
		}
		if k == "purl" {
			if _, err := packageurl.FromString(v); err != nil {
				return fmt.Sprintf("identifiers.purl %q: %v", quote.Prefix(v), err)
			}
		}
	}
	for k, v := range hashes {
		if !hashKeys[k] {
			return fmt.Sprintf("hash algorithm %q is not one of OpenVEX's", quote.Prefix(k))
		}
		if v == "" || len(v) > 256 {
			return fmt.Sprintf("hash %s: empty or too long", k)
		}
	}
	return ""
}

// purls returns the component's package URLs: its @id if that is one,
// and identifiers.purl.
func purls(id string, ids map[string]string) []packageurl.PackageURL {
	var out []packageurl.PackageURL
	for _, s := range []string{id, ids["purl"]} {
		if !strings.HasPrefix(s, "pkg:") {
			continue
		}
		if p, err := packageurl.FromString(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func (c Component) purl() (packageurl.PackageURL, bool) {
	ps := purls(c.ID, c.Identifiers)
	if len(ps) == 0 {
		return packageurl.PackageURL{}, false
	}
	return ps[0], true
}

// Names reports whether the product is the artifact with digest d
// ("sha256:<hex>"): its @id is d, its sha-256 hash is d's hex, or one of
// its package URLs has d as its version (pkg:oci/app@sha256:...) or lists
// d in its checksum qualifier. A name or version alone never names an
// artifact.
func (p Product) Names(d string) bool {
	if !digest.Valid(d) {
		return false
	}
	hexd := strings.TrimPrefix(d, "sha256:")
	if p.ID == d || strings.EqualFold(p.Hashes["sha-256"], hexd) {
		return true
	}
	for _, u := range purls(p.ID, p.Identifiers) {
		if v, err := url.PathUnescape(u.Version); err == nil && strings.EqualFold(v, d) {
			return true
		}
		for _, q := range u.Qualifiers {
			if q.Key != "checksum" && q.Key != "checksums" {
				continue
			}
			for c := range strings.SplitSeq(q.Value, ",") {
				if strings.EqualFold(strings.TrimSpace(c), d) {
					return true
				}
			}
		}
	}
	return false
}

// About checks that every statement of d names the artifact with digest
// artifactDigest among its products: a document submitted for an artifact
// is about that artifact. Errors match ErrInvalid.
func (d *Document) About(artifactDigest string) error {
	var bad []string
	for i, s := range d.Statements {
		named := false
		for _, p := range s.Products {
			if p.Names(artifactDigest) {
				named = true
				break
			}
		}
		if !named {
			bad = append(bad, fmt.Sprint(i+1))
		}
	}
	if len(bad) > 0 {
		return invalid("statement %s names no product with digest %s: give the artifact as a product (@id %q, hashes.sha-256, or a purl whose version is the digest)",
			strings.Join(bad, ", "), artifactDigest, artifactDigest)
	}
	return nil
}
