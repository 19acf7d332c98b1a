package policy

import (
	"errors"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/custody-dev/custody/libs/sbom"
)

// value is in as the Rego value the policy evaluates: the document its
// JSON encoding (the json tags of Input) would decode to, built directly
// so that no admission pays for encoding the input to JSON and parsing it
// back (decision 0108). TestInputValueIsItsJSON holds the two equal.
func (in Input) value() (ast.Value, error) {
	created, err := jsonTime(in.Artifact.CreatedAt)
	if err != nil {
		return nil, err
	}
	a := in.Artifact
	artifact := ast.NewObject(
		str("name", a.Name), str("version", a.Version), str("digest", a.Digest),
		[2]*ast.Term{ast.InternedTerm("size"), ast.NewTerm(ast.Number(strconv.FormatInt(a.Size, 10)))},
		str("channel", a.Channel), str("builder_id", a.BuilderID),
		str("source_repo", a.SourceRepo), str("source_commit", a.SourceCommit),
		str("created_at", created),
	)
	v := in.Verification
	verification := ast.NewObject(
		boolean("signature", v.Signature), boolean("subject_match", v.SubjectMatch),
		boolean("log_inclusion", v.LogInclusion), boolean("checkpoint", v.Checkpoint),
		boolean("blob_integrity", v.BlobIntegrity),
		[2]*ast.Term{ast.InternedTerm("messages"), stringArray(v.Messages)},
	)
	return ast.NewObject(
		[2]*ast.Term{ast.InternedTerm("artifact"), ast.NewTerm(artifact)},
		str("environment", in.Environment),
		[2]*ast.Term{ast.InternedTerm("verification"), ast.NewTerm(verification)},
		str("trust_domain", in.TrustDomain),
		[2]*ast.Term{ast.InternedTerm("sbom"), ast.NewTerm(in.SBOM.value())},
	), nil
}

func (s SBOM) value() ast.Value {
	var comps, vulns *ast.Term
	if s.Components == nil {
		comps = ast.NullTerm()
	} else {
		terms := make([]*ast.Term, len(s.Components))
		for i, c := range s.Components {
			terms[i] = ast.NewTerm(component(c))
		}
		comps = ast.ArrayTerm(terms...)
	}
	if s.Vulnerabilities == nil {
		vulns = ast.NullTerm()
	} else {
		terms := make([]*ast.Term, len(s.Vulnerabilities))
		for i, v := range s.Vulnerabilities {
			terms[i] = ast.NewTerm(ast.NewObject(
				str("advisory", v.Advisory), str("severity", v.Severity), str("component", v.Component),
				str("reason", v.Reason), boolean("uncertain", v.Uncertain),
			))
		}
		vulns = ast.ArrayTerm(terms...)
	}
	return ast.NewObject(
		boolean("attached", s.Attached),
		[2]*ast.Term{ast.InternedTerm("components"), comps},
		[2]*ast.Term{ast.InternedTerm("vulnerabilities"), vulns},
	)
}

// component follows sbom.Component's json tags: purl, version and
// license are left out when empty.
func component(c sbom.Component) ast.Value {
	kv := make([][2]*ast.Term, 0, 4)
	if c.PURL != "" {
		kv = append(kv, str("purl", c.PURL))
	}
	kv = append(kv, str("name", c.Name))
	if c.Version != "" {
		kv = append(kv, str("version", c.Version))
	}
	if c.License != "" {
		kv = append(kv, str("license", c.License))
	}
	return ast.NewObject(kv...)
}

func str(k, v string) [2]*ast.Term {
	return [2]*ast.Term{ast.InternedTerm(k), ast.StringTerm(jsonString(v))}
}

func boolean(k string, v bool) [2]*ast.Term {
	return [2]*ast.Term{ast.InternedTerm(k), ast.BooleanTerm(v)}
}

func stringArray(ss []string) *ast.Term {
	if ss == nil {
		return ast.NullTerm()
	}
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = ast.StringTerm(jsonString(s))
	}
	return ast.ArrayTerm(terms...)
}

// jsonString is s as encoding/json would carry it: each byte that is not
// part of valid UTF-8 becomes U+FFFD.
func jsonString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = utf8.AppendRune(b, utf8.RuneError)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return string(b)
}

// jsonTime is t as time.Time's MarshalJSON writes it, with its error for
// a year outside [0, 9999].
func jsonTime(t time.Time) (string, error) {
	if y := t.Year(); y < 0 || y >= 10000 {
		return "", errors.New("json: error calling MarshalJSON for type time.Time: Time.MarshalJSON: year outside of range [0,9999]")
	}
	return t.Format(time.RFC3339Nano), nil
}
