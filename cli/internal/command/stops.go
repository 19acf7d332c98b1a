package command

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
)

// gatekeeperClient connects to the gatekeeper as defaultAs unless --as;
// done closes the connection and the identity.
func (c *cli) gatekeeperClient(ctx context.Context, defaultAs string) (gatekeeperv1.GatekeeperServiceClient, func(), error) {
	env, err := c.env(ctx, defaultAs)
	if err != nil {
		return nil, nil, err
	}
	cc, err := env.Dial("gatekeeper")
	if err != nil {
		env.Close()
		return nil, nil, err
	}
	return gatekeeperv1.NewGatekeeperServiceClient(cc), func() { cc.Close(); env.Close() }, nil
}

func (c *cli) printProto(m proto.Message) {
	b, _ := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(m)
	fmt.Fprintln(c.stdout, string(b))
}

func (c *cli) pauseCmd() *cobra.Command {
	var envName, reason string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pause --env E --reason R",
		Short: "Pause an environment: deny every admission to it and refuse its earlier decisions and tokens (one admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			gk, done, err := c.gatekeeperClient(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer done()
			resp, err := gk.Pause(cmd.Context(), &gatekeeperv1.PauseRequest{Environment: envName, Reason: reason})
			if err != nil {
				return fmt.Errorf("pause %s: %w", envName, err)
			}
			if asJSON {
				c.printProto(resp)
				return nil
			}
			p := pauseOf(resp.GetState(), envName)
			fmt.Fprintf(c.stdout, "PAUSED %s (epoch %d, log index %d)\n", envName, p.GetEpoch(), resp.GetLogIndex())
			fmt.Fprintf(c.stdout, "  admissions to %s are denied; decisions and tokens issued before %s are refused\n", envName, fmtTime(p.GetEpochTime().AsTime()))
			fmt.Fprintf(c.stdout, "  lifting it takes %d distinct admins or approvers: custody resume --env %s\n", p.GetLiftQuorum(), envName)
			return nil
		},
	}
	cmd.Flags().StringVar(&envName, "env", "", "environment to pause (required)")
	cmd.Flags().StringVar(&reason, "reason", "", "why; logged and shown to every denied caller (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the response as JSON")
	_ = cmd.MarkFlagRequired("env")
	_ = cmd.MarkFlagRequired("reason")
	return cmd
}

func (c *cli) resumeCmd() *cobra.Command {
	var envName string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "resume --env E",
		Short: "Approve lifting an environment's pause; it lifts once its quorum of distinct admins or approvers approved",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			gk, done, err := c.gatekeeperClient(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer done()
			resp, err := gk.Resume(cmd.Context(), &gatekeeperv1.ResumeRequest{Environment: envName})
			if err != nil {
				return fmt.Errorf("resume %s: %w", envName, err)
			}
			if asJSON {
				c.printProto(resp)
				return nil
			}
			printLift(c.stdout, "the pause of "+envName, resp.GetLifted(), resp.GetApprovals(), resp.GetQuorum(), pauseOf(resp.GetState(), envName).GetLiftApprovals(),
				"custody resume --env "+envName)
			return nil
		},
	}
	cmd.Flags().StringVar(&envName, "env", "", "environment to resume (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the response as JSON")
	_ = cmd.MarkFlagRequired("env")
	return cmd
}

func (c *cli) killswitchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "killswitch",
		Short: "Stop every admission, download URL and token everywhere (on), approve lifting it (off), or show every stop (status)",
	}
	var reason string
	var onJSON, offJSON, statusJSON bool
	on := &cobra.Command{
		Use:   "on --reason R",
		Short: "Turn the kill switch on (one admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			gk, done, err := c.gatekeeperClient(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer done()
			resp, err := gk.KillSwitchOn(cmd.Context(), &gatekeeperv1.KillSwitchOnRequest{Reason: reason})
			if err != nil {
				return fmt.Errorf("kill switch on: %w", err)
			}
			if onJSON {
				c.printProto(resp)
				return nil
			}
			ks := resp.GetState().GetKillSwitch()
			fmt.Fprintf(c.stdout, "KILL SWITCH ON (epoch %d, log index %d)\n", ks.GetEpoch(), resp.GetLogIndex())
			fmt.Fprintf(c.stdout, "  every admission is denied, the broker issues no URL and edges serve nothing and drop their caches\n")
			fmt.Fprintf(c.stdout, "  lifting it takes %d distinct admins or approvers: custody killswitch off\n", ks.GetLiftQuorum())
			return nil
		},
	}
	on.Flags().StringVar(&reason, "reason", "", "why; logged and shown to every denied caller (required)")
	on.Flags().BoolVar(&onJSON, "json", false, "print the response as JSON")
	_ = on.MarkFlagRequired("reason")
	off := &cobra.Command{
		Use:   "off",
		Short: "Approve lifting the kill switch; it lifts once its quorum of distinct admins or approvers approved",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			gk, done, err := c.gatekeeperClient(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer done()
			resp, err := gk.KillSwitchOff(cmd.Context(), &gatekeeperv1.KillSwitchOffRequest{})
			if err != nil {
				return fmt.Errorf("kill switch off: %w", err)
			}
			if offJSON {
				c.printProto(resp)
				return nil
			}
			printLift(c.stdout, "the kill switch", resp.GetLifted(), resp.GetApprovals(), resp.GetQuorum(), resp.GetState().GetKillSwitch().GetLiftApprovals(), "custody killswitch off")
			return nil
		},
	}
	off.Flags().BoolVar(&offJSON, "json", false, "print the response as JSON")
	st := &cobra.Command{
		Use:   "status",
		Short: "Show the kill switch, every pause, the latest key revocation and the recently revoked artifacts, with their epochs (exit 1 while the kill switch is on)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			gk, done, err := c.gatekeeperClient(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer done()
			resp, err := gk.GetStopState(cmd.Context(), &gatekeeperv1.GetStopStateRequest{})
			if err != nil {
				return fmt.Errorf("stop state: %w", err)
			}
			if statusJSON {
				c.printProto(resp)
			} else {
				printStopState(c.stdout, resp.GetState())
			}
			if resp.GetState().GetKillSwitch().GetActive() {
				return denied("the kill switch is on")
			}
			return nil
		},
	}
	st.Flags().BoolVar(&statusJSON, "json", false, "print the state as JSON")
	cmd.AddCommand(on, off, st)
	return cmd
}

func pauseOf(st *gatekeeperv1.StopState, env string) *gatekeeperv1.Stop {
	for _, p := range st.GetPauses() {
		if p.GetEnvironment() == env {
			return p.GetStop()
		}
	}
	return nil
}

func printLift(w io.Writer, what string, lifted bool, approvals, quorum int32, by []string, again string) {
	if lifted {
		fmt.Fprintf(w, "LIFTED %s (%d of %d approvals)\n", what, approvals, quorum)
		fmt.Fprintf(w, "  decisions and tokens issued before it was turned on stay refused: admit again\n")
		return
	}
	fmt.Fprintf(w, "APPROVED lifting %s: %d of %d approvals, %d more needed from other admins or approvers (%s)\n",
		what, approvals, quorum, quorum-approvals, again)
	if len(by) > 0 {
		fmt.Fprintf(w, "  approved by %s\n", strings.Join(by, ", "))
	}
}

func printStopState(w io.Writer, st *gatekeeperv1.StopState) {
	line := func(name string, s *gatekeeperv1.Stop) {
		state := "off"
		if s.GetActive() {
			state = fmt.Sprintf("ON since %s (%s, by %s); lift approvals %d of %d", fmtTime(s.GetEpochTime().AsTime()), s.GetReason(), s.GetTurnedOnBy(),
				len(s.GetLiftApprovals()), s.GetLiftQuorum())
		} else if s.GetEpoch() > 0 {
			state = fmt.Sprintf("off; last on at %s (epoch %d)", fmtTime(s.GetEpochTime().AsTime()), s.GetEpoch())
		}
		fmt.Fprintf(w, "%-14s %s\n", name, state)
	}
	line("kill switch", st.GetKillSwitch())
	for _, p := range st.GetPauses() {
		line("pause "+p.GetEnvironment(), p.GetStop())
	}
	rev := "none"
	if st.GetRevocationTime() != nil {
		rev = fmtTime(st.GetRevocationTime().AsTime())
	}
	fmt.Fprintf(w, "%-14s %s (checked %s)\n", "revocation", rev, fmtTime(st.GetRevocationsCheckedAt().AsTime()))
	// Revoked artifacts are listed for the finding-epoch retention only;
	// the gatekeeper denies them for good (custody revoke).
	for _, r := range st.GetRevoked() {
		fmt.Fprintf(w, "%-14s %s at %s by %s (log index %d): %s\n", "revoked", r.GetDigest(), fmtTime(r.GetEpochTime().AsTime()), r.GetRevokedBy(), r.GetLogIndex(), r.GetReason())
	}
	if st.GetRevokedOverflowTime() != nil {
		fmt.Fprintf(w, "%-14s more artifacts revoked than listed: everything issued before %s is refused\n", "revoked", fmtTime(st.GetRevokedOverflowTime().AsTime()))
	}
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
