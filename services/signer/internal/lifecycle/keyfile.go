package lifecycle

import (
	"encoding/pem"
	"fmt"
	"os"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/trustroot"
)

// ReadPublicKeyFile reads a PKIX PEM public key (an edge token key) for
// listing in trust roots.
func ReadPublicKeyFile(path string) (trustroot.Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return trustroot.Key{}, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return trustroot.Key{}, fmt.Errorf("%s: want a PEM \"PUBLIC KEY\" block", path)
	}
	pub, alg, err := attest.ParsePublicKey(blk.Bytes)
	if err != nil {
		return trustroot.Key{}, fmt.Errorf("%s: %w", path, err)
	}
	id, err := attest.KeyID(pub)
	if err != nil {
		return trustroot.Key{}, err
	}
	return trustroot.Key{ID: id, Algorithm: alg, PublicKey: blk.Bytes}, nil
}
