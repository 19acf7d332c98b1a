package attest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/custody-dev/custody/libs/strictjson"
)

// Bounds on the resolved dependencies a builder may claim. They keep a
// statement well under MaxEnvelopeSize and a lineage graph's fan-out small.
const (
	MaxDependencies        = 256
	MaxDependencyURILen    = 2048
	MaxDependencyNameLen   = 256
	MaxDependencyDigests   = 8
	MaxDigestAlgorithmLen  = 32
	MaxDigestValueLen      = 128
	MaxAnnotations         = 16
	MaxAnnotationKeyLen    = 64
	MaxAnnotationValueLen  = 1024
	MaxDependencyFileBytes = 512 << 10
)

// Dependency kinds, recorded as the "kind" annotation of a resolved
// dependency so that a lineage view can tell a source commit from a base
// image.
const (
	AnnotationKind      = "kind"
	KindSource          = "source"
	KindBaseImage       = "base-image"
	KindArtifact        = "artifact"
	KindPatch           = "patch"
	KindBuildEnv        = "build-env"
	digestSHA256        = "sha256"
	digestGitCommit     = "gitCommit"
	dependencyKeyPrefix = "uri:"
)

// ResourceDescriptor is an in-toto ResourceDescriptor as SLSA Provenance v1
// uses it in buildDefinition.resolvedDependencies: something the build
// used, named by URI and/or digests. Custody restricts annotations to
// strings.
type ResourceDescriptor struct {
	URI         string            `json:"uri,omitempty"`
	Digest      map[string]string `json:"digest,omitempty"`
	Name        string            `json:"name,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Key is the lineage graph's name for the resource: "sha256:<hex>" when
// it has a sha256 digest (how Custody artifacts and images are named),
// else "<algorithm>:<value>" of its first digest in algorithm order (a
// git commit is "gitCommit:<hex>"), else "uri:<uri>".
func (d ResourceDescriptor) Key() string {
	if h, ok := d.Digest[digestSHA256]; ok {
		return digestSHA256 + ":" + h
	}
	if len(d.Digest) > 0 {
		alg := slices.Sorted(maps.Keys(d.Digest))[0]
		return alg + ":" + d.Digest[alg]
	}
	return dependencyKeyPrefix + d.URI
}

// ValidDependencyKey reports whether k can name a lineage node: what Key
// returns for some valid descriptor.
func ValidDependencyKey(k string) bool {
	if uri, ok := strings.CutPrefix(k, dependencyKeyPrefix); ok {
		return uri != "" && validText(uri, MaxDependencyURILen)
	}
	alg, value, ok := strings.Cut(k, ":")
	return ok && validAlgorithm(alg) && validDigestValue(alg, value)
}

// ValidateDependencies checks resolved dependencies a builder claims: at
// most MaxDependencies, each with a URI or a digest, bounded printable
// strings, digests as lowercase hex (sha256 exactly 64), and no two with the
// same Key. It returns every problem at once (errors.Join), each wrapping
// ErrMalformed.
func ValidateDependencies(deps []ResourceDescriptor) error {
	if len(deps) > MaxDependencies {
		return fmt.Errorf("%w: %d resolved dependencies, more than %d", ErrMalformed, len(deps), MaxDependencies)
	}
	var errs []error
	seen := map[string]int{}
	for i, d := range deps {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%w: resolved dependency %d: %s", ErrMalformed, i, fmt.Sprintf(format, args...)))
		}
		if d.URI == "" && len(d.Digest) == 0 {
			bad("needs a uri or a digest")
		}
		if !validText(d.URI, MaxDependencyURILen) {
			bad("uri: want up to %d printable characters", MaxDependencyURILen)
		}
		if !validText(d.Name, MaxDependencyNameLen) {
			bad("name: want up to %d printable characters", MaxDependencyNameLen)
		}
		if len(d.Digest) > MaxDependencyDigests {
			bad("%d digests, more than %d", len(d.Digest), MaxDependencyDigests)
		}
		for _, alg := range slices.Sorted(maps.Keys(d.Digest)) {
			if !validAlgorithm(alg) {
				bad("digest algorithm %q: want 1-%d letters or digits", short(alg), MaxDigestAlgorithmLen)
			} else if !validDigestValue(alg, d.Digest[alg]) {
				bad("digest %s %q: want lowercase hex (sha256: 64 digits)", alg, short(d.Digest[alg]))
			}
		}
		if len(d.Annotations) > MaxAnnotations {
			bad("%d annotations, more than %d", len(d.Annotations), MaxAnnotations)
		}
		for _, k := range slices.Sorted(maps.Keys(d.Annotations)) {
			if k == "" || !validText(k, MaxAnnotationKeyLen) || !validText(d.Annotations[k], MaxAnnotationValueLen) {
				bad("annotation %q: want a key of 1-%d and a value of up to %d printable characters", short(k), MaxAnnotationKeyLen, MaxAnnotationValueLen)
			}
		}
		if d.URI != "" || len(d.Digest) > 0 {
			if j, dup := seen[d.Key()]; dup {
				bad("same resource as resolved dependency %d (%s)", j, short(d.Key()))
			}
			seen[d.Key()] = i
		}
	}
	return errors.Join(errs...)
}

type dependencyFile struct {
	ResolvedDependencies []ResourceDescriptor `json:"resolvedDependencies"`
}

// ParseDependencies parses a builder's provenance file: a JSON object
// {"resolvedDependencies": [ResourceDescriptor, ...]} of at most 512 KiB,
// strictly (unknown fields, trailing data and non-string annotations are
// refused), and validates it with ValidateDependencies. Errors wrap
// ErrMalformed.
func ParseDependencies(b []byte) ([]ResourceDescriptor, error) {
	if len(b) > MaxDependencyFileBytes {
		return nil, fmt.Errorf("%w: provenance file is %d bytes, limit %d", ErrMalformed, len(b), MaxDependencyFileBytes)
	}
	var f dependencyFile
	if err := strictjson.Decode(b, MaxDependencyFileBytes, &f); err != nil {
		return nil, fmt.Errorf("%w: provenance file: %v", ErrMalformed, err)
	}
	if err := ValidateDependencies(f.ResolvedDependencies); err != nil {
		return nil, err
	}
	return f.ResolvedDependencies, nil
}

func validAlgorithm(alg string) bool {
	if alg == "" || len(alg) > MaxDigestAlgorithmLen {
		return false
	}
	for _, c := range alg {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func validDigestValue(alg, v string) bool {
	if alg == digestSHA256 && len(v) != 64 || v == "" || len(v) > MaxDigestValueLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func validText(s string, n int) bool {
	return len(s) <= n && utf8.ValidString(s) && !strings.ContainsFunc(s, unicode.IsControl)
}

func short(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// SourceDependency is the resolved dependency naming a build's source: the
// repository as a git URI and, when commit is a hex object name, its
// gitCommit digest (else the commit as an annotation). It returns false if
// repo is empty.
func SourceDependency(repo, commit string) (ResourceDescriptor, bool) {
	if repo == "" {
		return ResourceDescriptor{}, false
	}
	d := ResourceDescriptor{URI: repo, Annotations: map[string]string{AnnotationKind: KindSource}}
	if !strings.HasPrefix(repo, "git+") {
		d.URI = "git+" + repo
	}
	lc := strings.ToLower(commit)
	if (len(lc) == 40 || len(lc) == 64) && validDigestValue(digestGitCommit, lc) {
		d.Digest = map[string]string{digestGitCommit: lc}
	} else if commit != "" {
		d.Annotations["commit"] = commit
	}
	return d, true
}
