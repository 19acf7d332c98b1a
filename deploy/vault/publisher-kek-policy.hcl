# Vault policy for the Custody publisher's token: wrap, unwrap and rewrap
# per-artifact data keys with the Transit key custody-kek/keys/publisher.
# Nothing else: no key creation, rotation, configuration, export, backup or
# deletion, and nothing of the signer's signing keys (they live on another
# mount, under another policy). A key custodian creates and rotates the KEK
# with a separate token, then runs `custody store rewrap` (docs/decisions/0036-envelope-encryption.md).
#
#   vault secrets enable -path=custody-kek transit
#   vault write -f custody-kek/keys/publisher type=aes256-gcm96
#   vault policy write custody-publisher-kek deploy/vault/publisher-kek-policy.hcl
#   vault token create -policy=custody-publisher-kek -period=24h

path "custody-kek/encrypt/publisher" {
  capabilities = ["update"]
}

path "custody-kek/decrypt/publisher" {
  capabilities = ["update"]
}

path "custody-kek/rewrap/publisher" {
  capabilities = ["update"]
}
