package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/custody-dev/custody/libs/daemon"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
)

// logSource is where custody log verify reads the log.
type logSource interface {
	Checkpoint(ctx context.Context) ([]byte, error)
	Consistency(ctx context.Context, first, second uint64) ([][]byte, error)
}

// catalogSource reads the log through the catalog's gRPC API.
type catalogSource struct {
	c catalogv1.CatalogServiceClient
}

func (s catalogSource) Checkpoint(ctx context.Context) ([]byte, error) {
	resp, err := s.c.GetCheckpoint(ctx, &catalogv1.GetCheckpointRequest{})
	if err != nil {
		return nil, fmt.Errorf("get the log's checkpoint: %w", err)
	}
	return resp.GetCheckpoint(), nil
}

func (s catalogSource) Consistency(ctx context.Context, first, second uint64) ([][]byte, error) {
	resp, err := s.c.GetConsistencyProof(ctx, &catalogv1.GetConsistencyProofRequest{FirstSize: first, SecondSize: second})
	if err != nil {
		return nil, fmt.Errorf("get a consistency proof %d → %d: %w", first, second, err)
	}
	if resp.GetSecondSize() != second || resp.GetFirstSize() != first {
		return nil, fmt.Errorf("the catalog answered a consistency proof %d → %d for %d → %d", resp.GetFirstSize(), resp.GetSecondSize(), first, second)
	}
	return resp.GetConsistencyProof(), nil
}

// logState is the state file of custody log verify: the last checkpoint it
// verified, as a witness keeps it.
type logState struct {
	Origin     string `json:"origin"`
	Size       uint64 `json:"size"`
	RootHash   []byte `json:"root_hash"`
	Checkpoint []byte `json:"checkpoint"`
}

// logReport is what custody log verify prints (--json: as JSON).
type logReport struct {
	// Status is "first-use", "consistent" or "fork".
	Status   string    `json:"status"`
	Origin   string    `json:"origin"`
	Previous *logState `json:"previous,omitempty"`
	Current  *logState `json:"current"`
	Problem  string    `json:"problem,omitempty"`
}

// checkLog verifies the log's current checkpoint with the trust root's key
// and proves it consistent with the one in statePath; it saves the current
// one there only if it is. A fork or rollback is a report with status
// "fork" (and no error); errors are failures to check at all.
func checkLog(ctx context.Context, src logSource, root *trustroot.Root, statePath string) (*logReport, error) {
	signed, err := src.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	origin, _, _ := strings.Cut(string(signed[:min(len(signed), 1024)]), "\n")
	key, ok := root.LogVerifier(origin)
	if !ok {
		return nil, fmt.Errorf("trust root v%d lists no key for log %q", root.Version, origin)
	}
	cp, err := tlog.OpenCosigned(signed, origin, key)
	if err != nil {
		return nil, fmt.Errorf("the log's checkpoint: %w", err)
	}
	cur := &logState{Origin: cp.Origin, Size: cp.Size, RootHash: cp.Hash, Checkpoint: signed}
	rep := &logReport{Origin: origin, Current: cur}
	prev, err := loadLogState(statePath)
	if err != nil {
		return nil, err
	}
	if prev == nil {
		rep.Status = "first-use"
		return rep, saveLogState(statePath, cur)
	}
	if prev.Origin != origin {
		return nil, fmt.Errorf("state file %s is for log %q, the catalog serves %q: use another --state", statePath, prev.Origin, origin)
	}
	rep.Previous = prev
	older := &tlog.Checkpoint{Origin: origin, Size: prev.Size, Hash: prev.RootHash}
	var proof [][]byte
	if prev.Size > 0 && prev.Size < cp.Size {
		if proof, err = src.Consistency(ctx, prev.Size, cp.Size); err != nil {
			return nil, err
		}
	}
	if err := tlog.VerifyConsistency(older, cp, proof); err != nil {
		if errors.Is(err, tlog.ErrProofMismatch) {
			rep.Status, rep.Problem = "fork", err.Error()
			return rep, nil
		}
		return nil, fmt.Errorf("check consistency: %w", err)
	}
	rep.Status = "consistent"
	return rep, saveLogState(statePath, cur)
}

func loadLogState(path string) (*logState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read log state: %w", err)
	}
	var st logState
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil || dec.More() || len(st.RootHash) != 32 || st.Origin == "" {
		return nil, fmt.Errorf("log state %s is corrupt (%v): restore it, or move it away to trust the next checkpoint on first use", path, err)
	}
	return &st, nil
}

func saveLogState(path string, st *logState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save log state: %w", err)
	}
	if err := daemon.WriteFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save log state: %w", err)
	}
	return nil
}

func (c *cli) logCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "log", Short: "Check the transparency log"}
	var statePath string
	var asJSON bool
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify the log's co-signed checkpoint and prove it consistent with the last one seen (kept in --state); a fork exits 1",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if statePath == "" {
				if c.opts.DevDir == "" {
					return errors.New("--state FILE is required outside dev: the file where the last verified checkpoint is kept")
				}
				statePath = filepath.Join(c.opts.DevDir, "data", "cli", "log-state.json")
			}
			env, err := c.env(cmd.Context(), "auditor")
			if err != nil {
				return err
			}
			defer env.Close()
			trust, err := env.Trust(cmd.Context())
			if err != nil {
				return err
			}
			cc, err := env.Dial("catalog")
			if err != nil {
				return err
			}
			defer cc.Close()
			rep, err := checkLog(cmd.Context(), catalogSource{catalogv1.NewCatalogServiceClient(cc)}, trust.Root, statePath)
			if err != nil {
				return err
			}
			if asJSON {
				b, _ := json.MarshalIndent(rep, "", "  ")
				fmt.Fprintln(c.stdout, string(b))
			} else {
				printLogReport(c, rep)
			}
			if rep.Status == "fork" {
				return &exitError{code: ExitDenied, err: fmt.Errorf("log %s forked or rolled back: %s", rep.Origin, rep.Problem)}
			}
			return nil
		},
	}
	verify.Flags().StringVar(&statePath, "state", "", "file keeping the last verified checkpoint (default in dev: <dev-dir>/data/cli/log-state.json)")
	verify.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.AddCommand(verify)
	return cmd
}

func printLogReport(c *cli, rep *logReport) {
	switch rep.Status {
	case "first-use":
		fmt.Fprintf(c.stdout, "OK %s at size %d: first checkpoint seen, kept (trust on first use)\n", rep.Origin, rep.Current.Size)
	case "consistent":
		fmt.Fprintf(c.stdout, "OK %s at size %d extends the checkpoint seen at size %d\n", rep.Origin, rep.Current.Size, rep.Previous.Size)
	case "fork":
		fmt.Fprintf(c.stdout, "FORK %s: the log's checkpoint does not extend the one seen before\n  seen before:\n%s  now:\n%s", rep.Origin,
			indent(rep.Previous.Checkpoint), indent(rep.Current.Checkpoint))
	}
}

func indent(b []byte) string {
	var out strings.Builder
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line != "" {
			out.WriteString("    " + line)
		}
	}
	return out.String()
}
