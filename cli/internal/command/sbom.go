package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/verify"
)

// readSBOMFile reads and parses an SBOM file for an early, local error; the
// publisher and the catalog parse it again.
func readSBOMFile(path string) ([]byte, string, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", 0, fmt.Errorf("--sbom: %w", err)
	}
	defer f.Close()
	doc, err := io.ReadAll(io.LimitReader(f, sbom.MaxBytes+1))
	if err != nil {
		return nil, "", 0, fmt.Errorf("read SBOM %s: %w", path, err)
	}
	format, comps, err := sbom.Parse(doc)
	if err != nil {
		return nil, "", 0, fmt.Errorf("SBOM %s: %w (want CycloneDX 1.5/1.6 or SPDX 2.3 JSON, at most %d bytes)", path, err, sbom.MaxBytes)
	}
	return doc, format, len(comps), nil
}

func (c *cli) sbomCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sbom NAME@VERSION|DIGEST [--json]",
		Short: "List an artifact's SBOM components, after verifying its signed SBOM attestation and log entry",
		Long: `sbom reads the SBOM attached to an artifact from the catalog and verifies
it against the pinned trust root before printing anything: the artifact's own
evidence, the SBOM statement's signature (an artifact key valid for the
artifact's channel, not revoked), that the statement is about the artifact's
digest and names the document served, and the sbom.attached log entry
(co-signed checkpoint, inclusion proof, the publisher as its writer, the
artifact's builder as the attacher). The components printed are parsed here
from the verified document; the catalog's list must match them.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cat, root, done, err := c.catalogClient(ctx, true)
			if err != nil {
				return err
			}
			defer done()
			out, err := verifiedSBOM(ctx, cat, root, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.stdout, out)
			}
			printSBOM(c.stdout, out)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the SBOM as JSON (docs/cli-json.md)")
	cmd.AddCommand(c.sbomAttachCmd())
	return cmd
}

func (c *cli) sbomAttachCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "attach NAME@VERSION FILE",
		Short: "Attach an SBOM to an artifact you published (as its builder); an artifact's SBOM is never replaced",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, version, digest, err := parseRef(args[0])
			if err != nil {
				return err
			}
			if digest != "" {
				return fmt.Errorf("%s: attach to NAME@VERSION", args[0])
			}
			doc, _, _, err := readSBOMFile(args[1])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			env, err := c.env(ctx, "builder")
			if err != nil {
				return err
			}
			defer env.Close()
			cc, err := env.Dial("publisher")
			if err != nil {
				return err
			}
			defer cc.Close()
			att, err := sendSBOM(ctx, publisherv1.NewPublisherServiceClient(cc), name, version, doc)
			if err != nil {
				return sbomErr(name, version, err)
			}
			printAttached(c.stdout, name, version, att)
			return nil
		},
	}
}

// sbomErr makes refusals exit as denials.
func sbomErr(name, version string, err error) error {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.AlreadyExists, codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition:
		return denied("attach SBOM to %s@%s: %s", name, version, status.Convert(err).Message())
	}
	return fmt.Errorf("attach SBOM to %s@%s: %w", name, version, err)
}

func sendSBOM(ctx context.Context, c publisherv1.PublisherServiceClient, name, version string, doc []byte) (*publisherv1.AttachedSBOM, error) {
	stream, err := c.AttachSBOM(ctx)
	if err != nil {
		return nil, err
	}
	send := func(m *publisherv1.AttachSBOMRequest) error {
		if err := stream.Send(m); errors.Is(err, io.EOF) {
			_, err = stream.CloseAndRecv()
			return err
		} else {
			return err
		}
	}
	if err := send(&publisherv1.AttachSBOMRequest{Msg: &publisherv1.AttachSBOMRequest_Header{Header: &publisherv1.AttachSBOMHeader{
		Name: name, Version: version, Size: int64(len(doc))}}}); err != nil {
		return nil, err
	}
	for rest := doc; len(rest) > 0; {
		n := min(chunkSize, len(rest))
		if err := send(&publisherv1.AttachSBOMRequest{Msg: &publisherv1.AttachSBOMRequest_Chunk{Chunk: rest[:n]}}); err != nil {
			return nil, err
		}
		rest = rest[n:]
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	return resp.GetSbom(), nil
}

func printAttached(w io.Writer, name, version string, att *publisherv1.AttachedSBOM) {
	state := "attached"
	if !att.GetCreated() {
		state = "already attached (same document)"
	}
	fmt.Fprintf(w, "SBOM of %s@%s %s\n  format     %s\n  document   %s\n  components %d\n", name, version, state,
		att.GetFormat(), att.GetDocumentDigest(), att.GetComponents())
	if att.GetCreated() {
		fmt.Fprintf(w, "  log index  %d\n", att.GetLogIndex())
	}
}

// jsonSBOM is `custody sbom --json`.
type jsonSBOM struct {
	Name           string          `json:"name"`
	Version        string          `json:"version"`
	Digest         string          `json:"digest"`
	Format         string          `json:"format"`
	DocumentDigest string          `json:"document_digest"`
	AttachedBy     string          `json:"attached_by"`
	AttachedAt     string          `json:"attached_at"`
	KeyID          string          `json:"key_id"`
	LogIndex       int64           `json:"log_index"`
	Components     []jsonComponent `json:"components"`
}

// jsonComponent is one component (libs/sbom.Component's fields).
type jsonComponent struct {
	PURL    string `json:"purl"`
	Name    string `json:"name"`
	Version string `json:"version"`
	License string `json:"license"`
}

// verifiedSBOM fetches ref's SBOM and verifies it (see sbomCmd). Any
// failed check is a denial.
func verifiedSBOM(ctx context.Context, cat catalogv1.CatalogServiceClient, root *trustroot.Root, ref string) (*jsonSBOM, error) {
	name, version, digest, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	art, err := cat.GetArtifact(ctx, &catalogv1.GetArtifactRequest{Name: name, Version: version, Digest: digest})
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", ref, err)
	}
	ev := verify.FromProto(art)
	if err := verify.Check(ev, root, verify.Options{Want: verify.Want{Name: name, Version: version, Digest: digest}}).Err(); err != nil {
		return nil, denied("%v", err)
	}
	a := ev.Artifact
	resp, err := cat.GetSBOM(ctx, &catalogv1.GetSBOMRequest{Name: a.Name, Version: a.Version, IncludeDocument: true}, sbom.CallOptions()...)
	if status.Code(err) == codes.NotFound {
		return nil, denied("%s@%s has no SBOM: %s", a.Name, a.Version, status.Convert(err).Message())
	}
	if err != nil {
		return nil, fmt.Errorf("SBOM of %s@%s: %w", a.Name, a.Version, err)
	}
	b := resp.GetSbom()
	entry, err := sbomEntry(ctx, cat, b.GetLogIndex())
	if err != nil {
		return nil, fmt.Errorf("SBOM of %s@%s: log entry %d: %w", a.Name, a.Version, b.GetLogIndex(), err)
	}
	comps, sref, err := verify.SBOMComponents(verify.SBOMEvidence{Envelope: b.GetEnvelope(), Entry: entry, Document: b.GetDocument()}, a, root,
		verify.Options{}, verify.ComponentsFromProto(b.GetComponents()))
	if err != nil {
		return nil, denied("%v", err)
	}
	out := &jsonSBOM{Name: a.Name, Version: a.Version, Digest: a.Digest, Format: sref.Format, DocumentDigest: sref.DocumentDigest,
		AttachedBy: b.GetAttachedBy(), AttachedAt: b.GetAttachedAt().AsTime().UTC().Format(time.RFC3339), KeyID: b.GetKeyId(),
		LogIndex: b.GetLogIndex(), Components: make([]jsonComponent, len(comps))}
	for i, cp := range comps {
		out.Components[i] = jsonComponent{PURL: cp.PURL, Name: cp.Name, Version: cp.Version, License: cp.License}
	}
	return out, nil
}

// sbomEntry fetches the entry at index with an inclusion proof. A fresh
// entry may not be covered by a co-signed checkpoint yet: it asks again for
// a few seconds.
func sbomEntry(ctx context.Context, cat catalogv1.CatalogServiceClient, index int64) (verify.LogEntry, error) {
	if index < 0 {
		return verify.LogEntry{}, fmt.Errorf("negative log index")
	}
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		var p *catalogv1.GetInclusionProofResponse
		p, err = cat.GetInclusionProof(ctx, &catalogv1.GetInclusionProofRequest{Index: uint64(index)})
		if err == nil {
			return verify.LogEntry{Index: index, Leaf: p.GetLeaf(), InclusionProof: p.GetInclusionProof(), Checkpoint: p.GetCheckpoint()}, nil
		}
		if c := status.Code(err); c != codes.InvalidArgument && c != codes.Unavailable && c != codes.FailedPrecondition && c != codes.OutOfRange {
			return verify.LogEntry{}, err
		}
		select {
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
			return verify.LogEntry{}, ctx.Err()
		}
	}
	return verify.LogEntry{}, err
}

func printSBOM(w io.Writer, s *jsonSBOM) {
	fmt.Fprintf(w, "SBOM of %s@%s (%s), verified\n  format     %s\n  document   %s\n  attached   %s by %s\n  signed by  %s\n  log index  %d\n  components %d\n",
		s.Name, s.Version, s.Digest, s.Format, s.DocumentDigest, s.AttachedAt, s.AttachedBy, s.KeyID, s.LogIndex, len(s.Components))
	for _, cp := range s.Components {
		line := "    " + cp.Name
		if cp.Version != "" {
			line += " " + cp.Version
		}
		if cp.PURL != "" {
			line += "  " + cp.PURL
		}
		lic := cp.License
		if lic == "" {
			lic = "licence unknown"
		}
		fmt.Fprintln(w, line+"  "+lic)
	}
}
