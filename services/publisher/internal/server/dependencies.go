package server

import (
	"fmt"

	"github.com/custody-dev/custody/libs/attest"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
)

// dependencies returns the resolved dependencies the builder claims in h,
// the source (source_repo and source_commit) first unless the builder
// listed it itself, validated by attest.ValidateDependencies. They are the
// builder's claims and are recorded as such; the builder's identity is
// never among them.
func dependencies(h *publisherv1.UploadHeader) ([]attest.ResourceDescriptor, error) {
	claimed := h.GetResolvedDependencies()
	if len(claimed) > attest.MaxDependencies {
		return nil, fmt.Errorf("%w: %d resolved dependencies, more than %d", errInvalid, len(claimed), attest.MaxDependencies)
	}
	deps := make([]attest.ResourceDescriptor, 0, len(claimed)+1)
	for _, d := range claimed {
		deps = append(deps, attest.ResourceDescriptor{URI: d.GetUri(), Digest: nonEmpty(d.GetDigest()), Name: d.GetName(), Annotations: nonEmpty(d.GetAnnotations())})
	}
	if src, ok := attest.SourceDependency(h.GetSourceRepo(), h.GetSourceCommit()); ok && !hasKey(deps, src.Key()) {
		deps = append([]attest.ResourceDescriptor{src}, deps...)
	}
	if err := attest.ValidateDependencies(deps); err != nil {
		return nil, fmt.Errorf("%w: %v", errInvalid, err)
	}
	if len(deps) == 0 {
		return nil, nil
	}
	return deps, nil
}

func nonEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

func hasKey(deps []attest.ResourceDescriptor, key string) bool {
	for _, d := range deps {
		if d.Key() == key {
			return true
		}
	}
	return false
}
