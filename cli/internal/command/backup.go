package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/custody-dev/custody/cli/internal/backup"
	"github.com/custody-dev/custody/cli/internal/conn"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
)

func (c *cli) backupCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "backup", Short: "Write and check signed backup sets of a site (docs/runbooks/restore.md)"}
	var site, name string
	var asJSON bool
	create := &cobra.Command{
		Use:   "create DIR",
		Short: "Copy the site's blobs, wrapped keys, catalog, log tiles, signer state and trust root into the new set DIR, signed by the backup key (as an admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if site == "" {
				site = c.opts.DevDir
			}
			if site == "" {
				return errors.New("--site DIR is required outside dev: the directory holding the site's data/ and trust/")
			}
			env, err := c.env(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer env.Close()
			trust, err := env.Trust(cmd.Context())
			if err != nil {
				return err
			}
			sc, err := env.Dial("signer")
			if err != nil {
				return err
			}
			defer sc.Close()
			cc, err := env.Dial("catalog")
			if err != nil {
				return err
			}
			defer cc.Close()
			rep, err := backup.Create(cmd.Context(), backup.CreateOptions{
				Site: site, Dir: args[0], Name: name, Root: trust.Root,
				Checkpoint: func(ctx context.Context) ([]byte, error) {
					resp, err := catalogv1.NewCatalogServiceClient(cc).GetCheckpoint(ctx, &catalogv1.GetCheckpointRequest{})
					return resp.GetCheckpoint(), err
				},
				Sign: func(ctx context.Context, st []byte) ([]byte, error) {
					resp, err := signerv1.NewSignerServiceClient(sc).SignBackupManifest(ctx, &signerv1.SignBackupManifestRequest{Statement: st})
					return resp.GetEnvelope(), err
				},
			})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.stdout, rep)
			}
			fmt.Fprintf(c.stdout, "backup set %s: %d files, %d bytes, log %s at size %d, manifest %s signed\n", rep.Dir, rep.Files, rep.Bytes, rep.LogOrigin, rep.LogSize, rep.ManifestDigest)
			for k, n := range rep.Kinds {
				fmt.Fprintf(c.stdout, "  %-12s %d\n", k, n)
			}
			return nil
		},
	}
	create.Flags().StringVar(&site, "site", "", "site directory to back up (default in dev: the dev stack's directory)")
	create.Flags().StringVar(&name, "name", "dev", "site name recorded in the signed statement")
	create.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")

	var verifyJSON bool
	var kek kekFlags
	verify := &cobra.Command{
		Use:   "verify DIR",
		Short: "Offline: check the set's signature against the pinned trust root, re-hash every file and prove the log against its co-signed checkpoint; exit 1 naming every problem",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pinned, err := pinnedRootBytes(c.opts)
			if err != nil {
				return err
			}
			blobs, err := kek.check(c.opts)
			if err != nil {
				return err
			}
			rows, err := kek.rows()
			if err != nil {
				return err
			}
			rep, err := backup.Verify(args[0], backup.VerifyOptions{Pinned: pinned, Blobs: blobs, CatalogRows: rows})
			if err != nil {
				return err
			}
			printBackupReport(c, rep, verifyJSON)
			if !rep.OK {
				return denied("backup set %s does not verify: %d problems", args[0], len(rep.Problems))
			}
			return nil
		},
	}
	verify.Flags().BoolVar(&verifyJSON, "json", false, "print the report as JSON")
	kek.register(verify)
	var push backup.PushOptions
	var pushJSON bool
	pushCmd := &cobra.Command{
		Use:   "push DIR",
		Short: "Upload a signed backup set to S3, each object locked (Object Lock, COMPLIANCE) for --retain when the bucket has Object Lock",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := backup.Push(cmd.Context(), args[0], push)
			if err != nil {
				return err
			}
			if pushJSON {
				return printJSON(c.stdout, rep)
			}
			lock := "WITHOUT Object Lock (the bucket has none): anyone with write access can change the objects"
			if rep.ObjectLock {
				lock = "locked (COMPLIANCE) until " + rep.RetainUntil.Format("2006-01-02T15:04:05Z")
			}
			fmt.Fprintf(c.stdout, "pushed %d objects (%d bytes) to s3://%s/%s, %s\n", rep.Objects, rep.Bytes, rep.Bucket, rep.Prefix, lock)
			return nil
		},
	}
	pf := pushCmd.Flags()
	pf.StringVar(&push.Endpoint, "s3-endpoint", "", "S3 endpoint URL (empty: AWS)")
	pf.StringVar(&push.Region, "s3-region", "us-east-1", "S3 region")
	pf.StringVar(&push.Bucket, "s3-bucket", "", "bucket (create it with Object Lock enabled)")
	pf.StringVar(&push.Prefix, "s3-prefix", "", "object name prefix, ending in /, e.g. the set's date")
	pf.StringVar(&push.AccessKeyFile, "s3-access-key-file", "", "file holding the access key id")
	pf.StringVar(&push.SecretKeyFile, "s3-secret-key-file", "", "file holding the secret access key")
	pf.BoolVar(&push.PathStyle, "s3-path-style", false, "address the bucket in the path (most S3-compatible servers)")
	pf.DurationVar(&push.Retain, "retain", 90*24*time.Hour, "how long each object stays locked")
	pf.BoolVar(&push.RequireLock, "require-object-lock", false, "refuse a bucket without Object Lock")
	pf.BoolVar(&pushJSON, "json", false, "print the report as JSON")
	cmd.AddCommand(create, verify, pushCmd)
	return cmd
}

func (c *cli) restoreCmd() *cobra.Command {
	var site, keysFrom string
	var asJSON bool
	var kek kekFlags
	cmd := &cobra.Command{
		Use:   "restore DIR",
		Short: "Verify the backup set DIR (as backup verify) and only then restore it into the empty --site",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if site == "" {
				return errors.New("--site DIR is required: the empty directory to restore into")
			}
			pinned, err := pinnedRootBytes(c.opts)
			if err != nil {
				return err
			}
			if keysFrom != "" {
				if err := copyDevKeys(keysFrom, site); err != nil {
					return err
				}
			}
			blobs, err := kek.check(c.opts)
			if err != nil {
				return err
			}
			rows, err := kek.rows()
			if err != nil {
				return err
			}
			rep, err := backup.Restore(args[0], backup.RestoreOptions{VerifyOptions: backup.VerifyOptions{Pinned: pinned, Blobs: blobs, CatalogRows: rows}, Site: site})
			switch {
			case rep != nil && asJSON:
				if perr := printJSON(c.stdout, rep); perr != nil {
					return perr
				}
			case rep != nil:
				printBackupReport(c, rep.Report, false)
			}
			if errors.Is(err, backup.ErrRefused) {
				return &exitError{code: ExitDenied, err: err}
			}
			if err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintf(c.stdout, "restored %d files into %s; start the site on it (dev: custody dev up --dir %s)\n", rep.Restored, site, site)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&site, "site", "", "empty directory to restore into")
	cmd.Flags().StringVar(&keysFrom, "keys-from", "", "development only: copy the dev key files (keystore, KEK, log and token keys: the stand-in for Vault/HSM) from this old dev directory")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	kek.register(cmd)
	return cmd
}

// kekFlags choose how backup verify and restore decrypt blobs: through
// `publisher verify-blobs`, the publisher's own decryption, with the
// publisher's KEK flags (or its CUSTODY_KEK, CUSTODY_VAULT_* environment).
type kekFlags struct {
	kek, softFile, publisherBin, catalogBin string
	skip, skipRows                          bool
}

func (k *kekFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&k.kek, "kek", "", "KEK back end to decrypt blobs with: vault (configured by the publisher's CUSTODY_VAULT_* environment) or soft (default in dev)")
	cmd.Flags().StringVar(&k.softFile, "soft-kek-file", "", "soft KEK key file (default in dev: <dev-dir>/keys/publisher-kek.json)")
	cmd.Flags().StringVar(&k.publisherBin, "publisher-bin", "", "the publisher binary (default: next to custody, then PATH)")
	cmd.Flags().BoolVar(&k.skip, "no-decrypt", false, "do not decrypt blobs (ciphertext digests are still checked); the report says blobs_decrypted -1")
	cmd.Flags().StringVar(&k.catalogBin, "catalog-bin", "", "the catalog binary, which reads its database's rows (default: next to custody, then PATH)")
	cmd.Flags().BoolVar(&k.skipRows, "no-catalog-rows", false, "do not match catalog rows against the log (the database's digest is still checked)")
}

// rows returns the catalog-row reader for VerifyOptions.CatalogRows.
func (k *kekFlags) rows() (func(string, func(backup.Row) error) error, error) {
	if k.skipRows {
		return nil, nil
	}
	bin := k.catalogBin
	if bin == "" {
		var err error
		if bin, err = findService("catalog", "reads the catalog's rows"); err != nil {
			return nil, fmt.Errorf("%w, or --no-catalog-rows", err)
		}
	}
	return func(db string, fn func(backup.Row) error) error { return runDumpRows(bin, db, fn) }, nil
}

func (k *kekFlags) check(opts conn.Options) (func(string) (int, []backup.Problem, error), error) {
	if k.skip {
		return nil, nil
	}
	kek, soft := k.kek, k.softFile
	if kek == "" && opts.DevDir != "" {
		kek = "soft"
	}
	if kek == "soft" && soft == "" && opts.DevDir != "" {
		soft = filepath.Join(opts.DevDir, "keys", "publisher-kek.json")
	}
	var args []string
	switch kek {
	case "soft":
		// The soft KEK creates a missing key file: make sure it is there,
		// or every blob would fail against a new key.
		if _, err := os.Stat(soft); err != nil {
			return nil, fmt.Errorf("--soft-kek-file: %w", err)
		}
		args = []string{"--kek", "soft", "--soft-kek-file", soft}
	case "vault":
		args = []string{"--kek", "vault"}
	case "":
		return nil, errors.New("--kek vault|soft is required to decrypt blobs outside dev (or --no-decrypt to check ciphertext digests only)")
	default:
		return nil, fmt.Errorf("--kek %q: want vault or soft", kek)
	}
	bin := k.publisherBin
	if bin == "" {
		var err error
		if bin, err = findService("publisher", "decrypts blobs"); err != nil {
			return nil, fmt.Errorf("%w, or --no-decrypt", err)
		}
	}
	return func(dir string) (int, []backup.Problem, error) {
		return runVerifyBlobs(bin, append([]string{"verify-blobs", "--data-dir", dir, "--blob-store", "local"}, args...))
	}, nil
}

func pinnedRootBytes(opts conn.Options) ([]byte, error) {
	path, err := conn.PinnedRootFile(opts)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the pinned trust root: %w", err)
	}
	return b, nil
}

// copyDevKeys copies a dev stack's keys/ directory into site/keys, which
// must not exist yet.
func copyDevKeys(from, site string) error {
	src := filepath.Join(from, "keys")
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("--keys-from: %w", err)
	}
	dst := filepath.Join(site, "keys")
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("--keys-from: %s exists already", dst)
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		out, err := os.OpenFile(filepath.Join(dst, e.Name()), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, err = io.Copy(out, in)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		in.Close()
		if err != nil {
			return fmt.Errorf("--keys-from %s: %w", e.Name(), err)
		}
	}
	return nil
}

func printBackupReport(c *cli, rep *backup.Report, asJSON bool) {
	if asJSON {
		_ = printJSON(c.stdout, rep)
		return
	}
	if rep.OK {
		blobs := fmt.Sprintf("%d blobs decrypted with the KEK to bytes of their digests", rep.BlobsDecrypted)
		if rep.BlobsDecrypted < 0 {
			blobs = "blobs NOT decrypted (--no-decrypt)"
		}
		rows := fmt.Sprintf("%d catalog rows matched against the log", rep.RowsChecked)
		if rep.RowsChecked < 0 {
			rows = "catalog rows NOT checked (--no-catalog-rows)"
		}
		fmt.Fprintf(c.stdout, "OK backup set %s of site %q (%s): %d files re-hashed, manifest signed by backup key %s (trust root v%d), log %s at size %d reproduced from its entries, %s, %s\n",
			rep.Dir, rep.Site, rep.Created.Format("2006-01-02T15:04:05Z"), rep.Files, rep.KeyID, rep.TrustRoot, rep.LogOrigin, rep.LogSize, blobs, rows)
		return
	}
	fmt.Fprintf(c.stdout, "FAILED backup set %s: %d problems\n", rep.Dir, len(rep.Problems))
	for _, p := range rep.Problems {
		kind := ""
		if p.Kind != "" {
			kind = " (" + p.Kind + ")"
		}
		row := ""
		if p.Row != "" {
			row = " row " + p.Row
		}
		fmt.Fprintf(c.stdout, "  %s%s%s: %s\n", p.Path, kind, row, p.Problem)
	}
}
