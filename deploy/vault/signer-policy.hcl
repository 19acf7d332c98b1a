# Vault policy for the Custody signer's token: sign with Transit keys and
# read their public halves. Nothing else: no key creation, rotation,
# configuration, export, backup or deletion. A key custodian creates and
# rotates keys with a separate token (see docs/runbooks/key-compromise.md).
#
#   vault policy write custody-signer deploy/vault/signer-policy.hcl
#   vault token create -policy=custody-signer -period=24h

# Sign with any version of a key (the signer picks the version).
path "transit/sign/*" {
  capabilities = ["update"]
}

# Read key metadata and public keys (GET transit/keys/NAME).
path "transit/keys/*" {
  capabilities = ["read"]
}
