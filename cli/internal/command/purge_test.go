package command

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
)

// TestPurgeJSONFieldNames pins the field names of custody purge --json
// (docs/cli-json.md, "purge").
func TestPurgeJSONFieldNames(t *testing.T) {
	at := timestamppb.New(time.Unix(1_800_000_000, 0))
	jobs := purgeJobs([]*cdnbrokerv1.PurgeJob{{Id: "pj-1", Digest: "sha256:ab", Reason: "admin", Reference: "r", RequestedBy: "spiffe://x/admin/a", RequestedAt: at,
		Targets: []*cdnbrokerv1.PurgeTarget{{Name: "edge:a", Attempts: 2, LastError: "down", NextAttemptAt: at}, {Name: "cdn:b", Confirmed: true, Attempts: 1}}}})
	var buf bytes.Buffer
	c := &cli{stdout: &buf}
	if err := c.printPurgeJobs(jobs, true); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Jobs []map[string]json.RawMessage `json:"jobs"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range got.Jobs[0] {
		names = append(names, k)
	}
	want := "digest done id reason reference requested_at requested_by targets"
	if s := strings.Join(sorted(names), " "); s != want {
		t.Fatalf("job fields %q, want %q", s, want)
	}
	var targets []map[string]json.RawMessage
	json.Unmarshal(got.Jobs[0]["targets"], &targets)
	names = names[:0]
	for k := range targets[0] {
		names = append(names, k)
	}
	if s := strings.Join(sorted(names), " "); s != "attempts confirmed last_error name next_attempt_at" {
		t.Fatalf("target fields %q", s)
	}
	if _, ok := targets[1]["next_attempt_at"]; ok {
		t.Fatal("a confirmed target has next_attempt_at")
	}
	buf.Reset()
	if err := c.printPurgeJobs(nil, true); err != nil || strings.TrimSpace(buf.String()) != "{\n  \"jobs\": []\n}" {
		t.Fatalf("no jobs: %q, %v", buf.String(), err)
	}
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}
