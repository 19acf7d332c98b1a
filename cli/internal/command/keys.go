package command

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"

	"github.com/custody-dev/custody/cli/internal/conn"
)

func (c *cli) keysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "List, rotate and revoke signing keys; re-sign artifacts after a compromise",
	}
	cmd.AddCommand(c.keysListCmd(), c.keysRotateCmd(), c.keysRevokeCmd(), c.keysResignCmd())
	return cmd
}

// keyClient opens a KeyService client, as the admin unless --as.
func (c *cli) keyClient(ctx context.Context) (signerv1.KeyServiceClient, func(), error) {
	cc, done, err := c.dialSigner(ctx, "admin")
	if err != nil {
		return nil, nil, err
	}
	return signerv1.NewKeyServiceClient(cc), done, nil
}

// dialSigner connects to the signer acting as defaultAs unless --as; done
// closes the connection and the identity.
func (c *cli) dialSigner(ctx context.Context, defaultAs string) (*grpc.ClientConn, func(), error) {
	env, err := c.env(ctx, defaultAs)
	if err != nil {
		return nil, nil, err
	}
	cc, err := env.Dial("signer")
	if err != nil {
		env.Close()
		return nil, nil, err
	}
	return cc, func() { cc.Close(); env.Close() }, nil
}

func (c *cli) keysListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List every signing key version with its status and validity window",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kc, done, err := c.keyClient(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			resp, err := kc.ListKeys(cmd.Context(), &signerv1.ListKeysRequest{})
			if err != nil {
				return fmt.Errorf("list keys: %w", err)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tSTATUS\tPURPOSE\tCHANNELS\tALGORITHM\tKEY ID\tVALID FROM\tVALID UNTIL\tREVOKED AT")
			for _, k := range resp.GetKeys() {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.GetName(), k.GetVersion(), keyStatus(k.GetStatus()),
					keyPurpose(k.GetPurpose()), channelsOf(k), k.GetAlgorithm(), shortID(k.GetKeyId()),
					stamp(k.GetValidFrom()), stamp(k.GetValidUntil()), stamp(k.GetRevokedAt()))
			}
			return tw.Flush()
		},
	}
}

func (c *cli) keysRotateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate NAME",
		Short: "Add a version to a key; it signs once a published trust root lists it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kc, done, err := c.keyClient(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			resp, err := kc.RotateKey(cmd.Context(), &signerv1.RotateKeyRequest{Name: args[0]})
			if err != nil {
				return fmt.Errorf("rotate %s: %w", args[0], err)
			}
			k := resp.GetKey()
			fmt.Fprintf(c.stdout, "rotated %s: version %d (%s), key id %s\n", k.GetName(), k.GetVersion(), keyStatus(k.GetStatus()), k.GetKeyId())
			if v := resp.GetTrustRootVersion(); v > 0 {
				fmt.Fprintf(c.stdout, "published in trust root version %d: it signs now\n", v)
			} else {
				fmt.Fprintln(c.stdout, "pending: it signs once a trust root lists it; run the ceremony: custody trustroot draft, sign, publish (docs/trust-root.md)")
			}
			return nil
		},
	}
}

func (c *cli) keysRevokeCmd() *cobra.Command {
	var version int
	var effective, reason string
	cmd := &cobra.Command{
		Use:   "revoke NAME --version N --reason TEXT [--effective TIME]",
		Short: "Revoke a key version from a time on; published at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &signerv1.RevokeKeyVersionRequest{Name: args[0], Version: int32(version), Reason: reason}
			if effective != "" {
				t, err := parseWhen(effective, time.Now())
				if err != nil {
					return err
				}
				req.EffectiveAt = timestamppb.New(t)
			}
			kc, done, err := c.keyClient(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			resp, err := kc.RevokeKeyVersion(cmd.Context(), req)
			if err != nil {
				return fmt.Errorf("revoke %s version %d: %w", args[0], version, err)
			}
			k := resp.GetKey()
			fmt.Fprintf(c.stdout, "revoked %s version %d (key id %s) from %s\n", k.GetName(), k.GetVersion(), k.GetKeyId(), stamp(k.GetRevokedAt()))
			if v := resp.GetTrustRootVersion(); v > 0 {
				fmt.Fprintf(c.stdout, "published in trust root version %d\n", v)
			} else {
				fmt.Fprintln(c.stdout, "verifiers see it now through the signer; also publish a trust root that lists it (custody trustroot draft, sign, publish)")
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&version, "version", 0, "key version to revoke (required)")
	cmd.Flags().StringVar(&reason, "reason", "", "why; recorded in the log (required)")
	cmd.Flags().StringVar(&effective, "effective", "", "from when signatures are invalid: RFC 3339 time, or a duration ago such as 2h (default now)")
	_ = cmd.MarkFlagRequired("version")
	_ = cmd.MarkFlagRequired("reason")
	return cmd
}

// parseWhen reads an RFC 3339 time or a duration before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--effective %q: want an RFC 3339 time (2026-12-01T10:00:00Z) or a duration ago (2h)", s)
}

func (c *cli) keysResignCmd() *cobra.Command {
	var version int
	var name string
	var dryRun bool
	var only []string
	cmd := &cobra.Command{
		Use:   "resign --revoked-version N [--key NAME] [--artifact NAME@VERSION ...]",
		Short: "Re-verify every artifact signed by a key version (stored bytes and signature) and re-sign it with the current version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := c.env(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer env.Close()
			r, err := newResigner(env)
			if err != nil {
				return err
			}
			defer r.close()
			return c.resign(cmd.Context(), r, name, version, dryRun, only)
		},
	}
	cmd.Flags().IntVar(&version, "revoked-version", 0, "the key version whose artifacts to re-sign (required)")
	cmd.Flags().StringVar(&name, "key", "artifact", "the key's name")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "re-verify and list, but do not re-sign")
	cmd.Flags().StringSliceVar(&only, "artifact", nil, "re-sign only these artifacts (NAME@VERSION, repeatable); default every artifact signed by the version")
	_ = cmd.MarkFlagRequired("revoked-version")
	return cmd
}

type resigner struct {
	keys      signerv1.KeyServiceClient
	signer    signerv1.SignerServiceClient
	catalog   catalogv1.CatalogServiceClient
	publisher publisherv1.PublisherServiceClient
	closers   []func() error
}

func newResigner(env *conn.Env) (*resigner, error) {
	r := &resigner{}
	for _, svc := range []string{"signer", "catalog", "publisher"} {
		cc, err := env.Dial(svc)
		if err != nil {
			r.close()
			return nil, err
		}
		r.closers = append(r.closers, cc.Close)
		switch svc {
		case "signer":
			r.keys, r.signer = signerv1.NewKeyServiceClient(cc), signerv1.NewSignerServiceClient(cc)
		case "catalog":
			r.catalog = catalogv1.NewCatalogServiceClient(cc)
		case "publisher":
			r.publisher = publisherv1.NewPublisherServiceClient(cc)
		}
	}
	return r, nil
}

func (r *resigner) close() {
	for _, f := range r.closers {
		f()
	}
}

func (c *cli) resign(ctx context.Context, r *resigner, name string, version int, dryRun bool, only []string) error {
	want := map[string]bool{}
	for _, ref := range only {
		if _, _, digest, err := parseRef(ref); err != nil || digest != "" {
			return fmt.Errorf("--artifact %q: want NAME@VERSION", ref)
		}
		want[ref] = true
	}
	ks, err := r.keys.ListKeys(ctx, &signerv1.ListKeysRequest{})
	if err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	var old *signerv1.PublicKey
	for _, k := range ks.GetKeys() {
		if k.GetName() == name && int(k.GetVersion()) == version {
			old = k
		}
	}
	switch {
	case old == nil:
		return fmt.Errorf("key %q has no version %d (custody keys list)", name, version)
	case old.GetStatus() == signerv1.KeyStatus_KEY_STATUS_CURRENT:
		return fmt.Errorf("%s version %d is the current version: rotate first (custody keys rotate %s), then re-sign", name, version, name)
	case old.GetStatus() != signerv1.KeyStatus_KEY_STATUS_REVOKED:
		fmt.Fprintf(c.stderr, "note: %s version %d is %s, not revoked: its signatures stay valid; re-signing anyway\n", name, version, keyStatus(old.GetStatus()))
	}
	pub, alg, err := attest.ParsePublicKey(old.GetPublicKeyDer())
	if err != nil {
		return fmt.Errorf("public key of %s version %d: %w", name, version, err)
	}
	oldKey := attest.Key{ID: old.GetKeyId(), Purpose: attest.PurposeArtifact, Algorithm: alg, Public: pub}

	var done, failed int
	token := ""
	for {
		page, err := r.catalog.ListArtifacts(ctx, &catalogv1.ListArtifactsRequest{SignedByKeyId: old.GetKeyId(), PageToken: token})
		if err != nil {
			return fmt.Errorf("list artifacts signed by %s: %w", old.GetKeyId(), err)
		}
		for _, la := range page.GetArtifacts() {
			a := la.GetArtifact()
			ref := a.GetName() + "@" + a.GetVersion()
			if len(want) > 0 && !want[ref] {
				continue
			}
			newKey, err := resignOne(ctx, r, a, oldKey, dryRun)
			if err != nil {
				failed++
				fmt.Fprintf(c.stdout, "FAILED   %s (%s): %v\n", ref, a.GetDigest(), err)
				continue
			}
			done++
			if dryRun {
				fmt.Fprintf(c.stdout, "VERIFIED %s (%s): bytes and signature by %s version %d intact\n", ref, a.GetDigest(), name, version)
			} else {
				fmt.Fprintf(c.stdout, "RESIGNED %s (%s): bytes and old signature verified, now signed by %s\n", ref, a.GetDigest(), shortID(newKey))
			}
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	verb := "re-signed"
	if dryRun {
		verb = "verified"
	}
	fmt.Fprintf(c.stdout, "%d artifacts %s, %d failed (key %s version %d)\n", done, verb, failed, name, version)
	if failed > 0 {
		return denied("%d artifacts could not be re-signed: they stay signed only by %s version %d; fix what each line says and run this again", failed, name, version)
	}
	return nil
}

// resignOne re-verifies one artifact's stored bytes and envelope, then has
// the signer re-sign it (the signer records the new envelope in the
// catalog). It returns the new key id.
func resignOne(ctx context.Context, r *resigner, a *catalogv1.Artifact, oldKey attest.Key, dryRun bool) (string, error) {
	got, err := r.catalog.GetArtifact(ctx, &catalogv1.GetArtifactRequest{Name: a.GetName(), Version: a.GetVersion()})
	if err != nil {
		return "", fmt.Errorf("catalog: %w", err)
	}
	vb, err := r.publisher.VerifyBlob(ctx, &publisherv1.VerifyBlobRequest{Digest: a.GetDigest()})
	if err != nil {
		return "", fmt.Errorf("stored bytes: %w", err)
	}
	if vb.GetSize() != a.GetSize() {
		return "", fmt.Errorf("stored blob has %d bytes, the record says %d", vb.GetSize(), a.GetSize())
	}
	envelope := got.GetEnvelope()
	env, err := attest.ParseEnvelope(envelope)
	if err != nil {
		return "", fmt.Errorf("envelope: %w", err)
	}
	if _, err := env.Verify([]attest.Key{oldKey}, attest.PurposeArtifact); err != nil {
		return "", fmt.Errorf("old signature: %w", err)
	}
	st, err := attest.ParseStatement(env.Payload)
	if err != nil {
		return "", fmt.Errorf("statement: %w", err)
	}
	sa, err := st.Artifact()
	if err != nil {
		return "", fmt.Errorf("statement: %w", err)
	}
	if sa.Digest != a.GetDigest() || sa.Name != a.GetName() || sa.Version != a.GetVersion() {
		return "", fmt.Errorf("envelope is for %s@%s (%s), not this record", sa.Name, sa.Version, sa.Digest)
	}
	if dryRun {
		return oldKey.ID, nil
	}
	rs, err := r.signer.ResignArtifact(ctx, &signerv1.ResignArtifactRequest{Envelope: envelope})
	if err != nil {
		return "", fmt.Errorf("signer: %w", err)
	}
	ne, err := attest.ParseEnvelope(rs.GetEnvelope())
	if err != nil || !bytes.Equal(ne.Payload, env.Payload) {
		return "", fmt.Errorf("the signer returned an envelope over another statement")
	}
	// The signer recorded the new envelope in the catalog itself (the
	// catalog takes re-signatures only from the signer): check that it is
	// current now.
	now, err := r.catalog.GetArtifact(ctx, &catalogv1.GetArtifactRequest{Name: a.GetName(), Version: a.GetVersion()})
	if err != nil {
		return "", fmt.Errorf("catalog, after re-signing: %w", err)
	}
	if !bytes.Equal(now.GetEnvelope(), rs.GetEnvelope()) {
		return "", fmt.Errorf("the signer re-signed it (log entry %d) but the catalog serves another envelope: run this again", rs.GetLogIndex())
	}
	return rs.GetKeyId(), nil
}

func keyStatus(s signerv1.KeyStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "KEY_STATUS_"))
}

func keyPurpose(p signerv1.KeyPurpose) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "KEY_PURPOSE_"))
}

func channelsOf(k *signerv1.PublicKey) string {
	if len(k.GetChannels()) == 0 {
		if k.GetPurpose() == signerv1.KeyPurpose_KEY_PURPOSE_ARTIFACT {
			return "(others)"
		}
		return "-"
	}
	return strings.Join(k.GetChannels(), ",")
}

func shortID(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}

func stamp(t *timestamppb.Timestamp) string {
	if t == nil || (t.GetSeconds() == 0 && t.GetNanos() == 0) {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}
