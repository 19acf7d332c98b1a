package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"path/filepath"

	"github.com/custody-dev/custody/libs/daemon"
	libdigest "github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/local"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

// blobResult is one line of `publisher verify-blobs`: a blob's key record,
// and whether its ciphertext decrypts with the KEK to bytes of its digest.
type blobResult struct {
	Record  string `json:"record"`
	Digest  string `json:"digest,omitempty"`
	Size    int64  `json:"size,omitempty"`
	OK      bool   `json:"ok"`
	Problem string `json:"problem,omitempty"`
	// Unavailable: the KEK could not be asked; nothing was concluded.
	Unavailable bool `json:"unavailable,omitempty"`
}

// verifyBlobs is `publisher verify-blobs --data-dir DIR --kek ...`: offline,
// for a stopped site or a backup set, it reads every blob of the local store
// under DIR, unwrapping its data key with the KEK, authenticating every
// chunk and re-hashing the plaintext (sealed.Store.Verify, streaming), and
// prints one JSON line per blob. It fails if any blob does not verify.
func verifyBlobs(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var dataDir string
	var store storeConfig
	f := daemon.NewFlags("publisher verify-blobs", getenv)
	f.String(&dataDir, "data-dir", "CUSTODY_DATA_DIR", "", "the publisher's data directory (of a stopped site or a backup set)")
	store.register(f)
	if err := f.Parse(args); err != nil {
		return err
	}
	var errs []error
	if dataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	if store.Backend != "local" {
		errs = append(errs, fmt.Errorf("--blob-store %q: verify-blobs reads local stores (a backup set is one)", store.Backend))
	}
	if store.KEK == "signer" {
		errs = append(errs, errors.New("--kek signer: verify-blobs runs offline and cannot reach the signer's HSM; verify a site whose KEK is in Vault or the dev keystore, or verify blobs through a running publisher (VerifyBlob)"))
	}
	if err := errors.Join(append(errs, store.validate())...); err != nil {
		return err
	}
	blobs, err := store.open(dataDir, slog.New(slog.DiscardHandler), nil, "")
	if err != nil {
		return err
	}
	objects, err := local.New(filepath.Join(dataDir, "blobs"))
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	bad := 0
	err = objects.List(ctx, "keys/sha256/", func(name string) error {
		r := blobResult{Record: name, Digest: "sha256:" + path.Base(name)}
		if !libdigest.Valid(r.Digest) {
			r.Digest, r.Problem = "", "not a key record name"
		} else if n, err := blobs.Verify(ctx, r.Digest); err != nil {
			r.Problem, r.Unavailable = err.Error(), errors.Is(err, sealed.ErrUnavailable)
		} else {
			r.Size, r.OK = n, true
		}
		if !r.OK {
			bad++
		}
		return enc.Encode(r)
	})
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	if bad > 0 {
		return fmt.Errorf("%d blobs do not verify", bad)
	}
	return nil
}
