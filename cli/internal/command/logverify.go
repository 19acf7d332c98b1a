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
	"time"

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
	Status string `json:"status"`
	Origin string `json:"origin"`
	// Source is where the checkpoint and proof came from: "grpc" (the
	// catalog's API) or the tiles URL.
	Source   string    `json:"source"`
	Previous *logState `json:"previous,omitempty"`
	Current  *logState `json:"current"`
	Problem  string    `json:"problem,omitempty"`
}

// logCheck is how custody log verify checks: against which trust root,
// keeping state where, and how fresh the checkpoint must be.
type logCheck struct {
	Root      *trustroot.Root
	StatePath string
	// MaxAge, if positive, refuses a checkpoint co-signed longer ago than
	// that (tlog.CheckFresh) at Now.
	MaxAge time.Duration
	Now    time.Time
}

// checkLog verifies the log's current checkpoint with the trust root's key
// (and its freshness, with a maximum age) and proves it consistent with the
// one in the state file; it saves the current one there only if it is. A
// fork or rollback is a report with status "fork" (and no error); errors
// are failures to check at all, a stale checkpoint among them.
func checkLog(ctx context.Context, src logSource, lc logCheck) (*logReport, error) {
	root, statePath := lc.Root, lc.StatePath
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
	if err := tlog.CheckFresh(cp, lc.Now, lc.MaxAge); err != nil {
		return nil, fmt.Errorf("the log's checkpoint: %w", err)
	}
	cur := &logState{Origin: cp.Origin, Size: cp.Size, RootHash: cp.Hash, Checkpoint: signed}
	rep := &logReport{Origin: origin, Source: sourceName(src), Current: cur}
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

func sourceName(src logSource) string {
	if t, ok := src.(*tilesSource); ok {
		return t.url
	}
	return "grpc"
}

func (c *cli) logCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "log", Short: "Check the transparency log"}
	var statePath, tilesURL string
	var asJSON, overGRPC bool
	var maxAge time.Duration
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify the log's co-signed checkpoint (from its HTTPS tiles, or --grpc) and prove it consistent with the last one seen (kept in --state); a fork exits 1",
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
			if tilesURL != "" && overGRPC {
				return errors.New("--tiles and --grpc exclude each other: read the log from its HTTPS tiles or from the catalog's gRPC API")
			}
			if maxAge < 0 {
				return fmt.Errorf("--max-age %s: want a positive duration, or 0 for no limit", maxAge)
			}
			if tilesURL == "" && !overGRPC {
				if a := env.HTTPSAddr("catalog"); a != "" {
					tilesURL = "https://" + a + "/"
				}
			}
			var src logSource
			if tilesURL != "" {
				roots, err := env.WebRoots()
				if err != nil {
					return err
				}
				if src, err = newTilesSource(tilesURL, roots); err != nil {
					return err
				}
			} else {
				cc, err := env.Dial("catalog")
				if err != nil {
					return err
				}
				defer cc.Close()
				src = catalogSource{catalogv1.NewCatalogServiceClient(cc)}
			}
			rep, err := checkLog(cmd.Context(), src, logCheck{Root: trust.Root, StatePath: statePath, MaxAge: maxAge, Now: time.Now()})
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
	verify.Flags().StringVar(&tilesURL, "tiles", "",
		"verify from the log's public HTTPS tiles at this URL (checkpoint and consistency proof from the tiles alone); default in dev: the catalog's HTTPS endpoint")
	verify.Flags().BoolVar(&overGRPC, "grpc", false, "read the checkpoint and proof through the catalog's gRPC API instead of the tiles")
	verify.Flags().DurationVar(&maxAge, "max-age", defaultLogMaxAge,
		"refuse a checkpoint co-signed longer ago than this: the catalog has an idle log co-signed again every --cosign-refresh (30s), so an older one means a frozen log or a withheld view; 0: no limit")
	cmd.AddCommand(verify)
	return cmd
}

// defaultLogMaxAge is custody log verify's --max-age: well above the
// catalog's --cosign-refresh (30s) and the gatekeeper's
// --max-checkpoint-age (5m), so that a healthy idle log passes.
const defaultLogMaxAge = 10 * time.Minute

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
