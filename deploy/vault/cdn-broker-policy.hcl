# Vault policy for the Custody cdn-broker's token: read the CDN signing keys
# and purge credentials (KV version 2) under custody-cdn/. Nothing else: no writes, no listing, no
# other mount. An admin writes and rotates the keys with another token; the
# broker reads them once at start (docs/decisions/0062-cdn-keys-and-rotation.md).
#
#   vault secrets enable -path=custody-cdn -version=2 kv
#   vault kv put custody-cdn/gcdn key-2=@gcdn-2.key
#   vault kv put custody-cdn/gcdn-purge sa=@gcdn-purger.json   # purge credentials (decision 0124)
#   vault policy write custody-cdn-broker deploy/vault/cdn-broker-policy.hcl
#   vault token create -policy=custody-cdn-broker -period=24h

path "custody-cdn/data/*" {
  capabilities = ["read"]
}
