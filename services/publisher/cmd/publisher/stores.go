package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/custody-dev/custody/libs/daemon"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/local"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/s3"
	"github.com/custody-dev/custody/services/publisher/internal/kek/signer"
	"github.com/custody-dev/custody/services/publisher/internal/kek/soft"
	"github.com/custody-dev/custody/services/publisher/internal/kek/vault"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

// storeConfig chooses the blob store back end and the KEK back end.
type storeConfig struct {
	Backend   string // local | s3
	S3        s3.Config
	KEK       string // soft | vault | signer
	SoftKEK   string // key file of the soft KEK
	Vault     vault.Config
	SignerKEK string // KEK name in the signer's PKCS#11 token
}

func (c *storeConfig) register(f *daemon.Flags) {
	f.String(&c.Backend, "blob-store", "CUSTODY_BLOB_STORE", "local", "blob store back end: local (under --data-dir) or s3")
	f.String(&c.S3.Endpoint, "s3-endpoint", "CUSTODY_S3_ENDPOINT", "", "S3 endpoint URL (empty: AWS)")
	f.String(&c.S3.Region, "s3-region", "CUSTODY_S3_REGION", "us-east-1", "S3 region")
	f.String(&c.S3.Bucket, "s3-bucket", "CUSTODY_S3_BUCKET", "", "S3 bucket")
	f.String(&c.S3.Prefix, "s3-prefix", "CUSTODY_S3_PREFIX", "", "object name prefix inside the bucket, ending in /")
	f.String(&c.S3.AccessKeyFile, "s3-access-key-file", "CUSTODY_S3_ACCESS_KEY_FILE", "", "file holding the S3 access key id")
	f.String(&c.S3.SecretKeyFile, "s3-secret-key-file", "CUSTODY_S3_SECRET_KEY_FILE", "", "file holding the S3 secret access key")
	f.Bool(&c.S3.PathStyle, "s3-path-style", "CUSTODY_S3_PATH_STYLE", false, "address the bucket in the path (most S3-compatible servers)")
	f.String(&c.KEK, "kek", "CUSTODY_KEK", "", "key-encryption back end wrapping data keys: signer (a KEK in the signer's PKCS#11 HSM), vault, or soft (development only)")
	f.String(&c.SoftKEK, "soft-kek-file", "CUSTODY_SOFT_KEK_FILE", "", "soft KEK key file (created if missing; keep it off the blob store)")
	f.String(&c.Vault.Addr, "vault-addr", "CUSTODY_VAULT_ADDR", "", "Vault address for the Transit KEK")
	f.String(&c.Vault.TokenFile, "vault-token-file", "CUSTODY_VAULT_TOKEN_FILE", "", "file holding the Vault token (policy deploy/vault/publisher-kek-policy.hcl)")
	f.String(&c.Vault.CAFile, "vault-ca-file", "CUSTODY_VAULT_CA_FILE", "", "PEM roots for Vault's TLS certificate")
	f.String(&c.Vault.Mount, "vault-kek-mount", "CUSTODY_VAULT_KEK_MOUNT", "custody-kek", "Transit mount of the KEK")
	f.String(&c.Vault.Key, "vault-kek-key", "CUSTODY_VAULT_KEK_KEY", "publisher", "Transit key name of the KEK")
	f.String(&c.SignerKEK, "signer-kek", "CUSTODY_SIGNER_KEK", "publisher", "with --kek signer: the KEK's name, one of the signer's --wrapping-key")
}

func (c *storeConfig) validate() error {
	var errs []error
	switch c.Backend {
	case "local":
	case "s3":
		errs = append(errs, c.S3.Validate())
	default:
		errs = append(errs, fmt.Errorf("--blob-store %q: want local or s3", c.Backend))
	}
	switch c.KEK {
	case "soft":
		if c.SoftKEK == "" {
			errs = append(errs, errors.New("--kek soft needs --soft-kek-file"))
		}
	case "vault":
		errs = append(errs, c.Vault.Validate())
	case "signer":
		if _, err := signer.New(nil, c.SignerKEK, ""); err != nil {
			errs = append(errs, fmt.Errorf("--signer-kek: %w", err))
		}
	case "":
		errs = append(errs, errors.New("--kek is required: signer or vault (production), or soft (development); blobs are always encrypted"))
	default:
		errs = append(errs, fmt.Errorf("--kek %q: want signer, vault or soft", c.KEK))
	}
	return errors.Join(errs...)
}

// open builds the encrypted store: the one back-end switch. wrap and
// signerAddr are the signer's KeyWrapService, for --kek signer.
func (c *storeConfig) open(dataDir string, logger *slog.Logger, wrap signerv1.KeyWrapServiceClient, signerAddr string) (*sealed.Store, error) {
	var objects blobstore.Backend
	var err error
	switch c.Backend {
	case "s3":
		objects, err = s3.New(c.S3)
	default:
		objects, err = local.New(filepath.Join(dataDir, "blobs"))
	}
	if err != nil {
		return nil, err
	}
	var k sealed.KEK
	switch c.KEK {
	case "vault":
		k, err = vault.New(c.Vault)
	case "signer":
		k, err = signer.New(wrap, c.SignerKEK, signerAddr)
	default:
		k, err = soft.Open(c.SoftKEK)
	}
	if err != nil {
		return nil, err
	}
	return sealed.New(objects, k, logger), nil
}
