package rpc_test

import (
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/identity"
)

// mixed presents one trust domain's SVID while trusting another's bundle.
type mixed struct {
	identity.Source
	bundleOf identity.Source
}

func (m *mixed) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return m.bundleOf.GetX509BundleForTrustDomain(td)
}
