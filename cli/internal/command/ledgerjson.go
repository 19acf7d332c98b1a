package command

import (
	"encoding/json"
	"maps"
	"time"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
)

// The --json output of custody audit, inventory, lineage and search. The
// field names are stable and documented in docs/cli-json.md: add fields,
// never rename or remove one. Times are RFC 3339 in UTC.

// jsonArtifact is one logged artifact as the catalog records it.
type jsonArtifact struct {
	Name         string    `json:"name"`
	Version      string    `json:"version"`
	Digest       string    `json:"digest"`
	Size         int64     `json:"size"`
	Channel      string    `json:"channel"`
	BuilderID    string    `json:"builder_id"`
	SourceRepo   string    `json:"source_repo"`
	SourceCommit string    `json:"source_commit"`
	CreatedAt    time.Time `json:"created_at"`
	// KeyID is the key id of the key version that signed the current
	// envelope (search and inventory only).
	KeyID string `json:"key_id,omitempty"`
}

func artifactJSON(a *catalogv1.Artifact, keyID string) jsonArtifact {
	j := jsonArtifact{Name: a.GetName(), Version: a.GetVersion(), Digest: a.GetDigest(), Size: a.GetSize(), Channel: a.GetChannel(),
		BuilderID: a.GetBuilderId(), SourceRepo: a.GetSourceRepo(), SourceCommit: a.GetSourceCommit(), KeyID: keyID}
	if a.GetCreatedAt() != nil {
		j.CreatedAt = a.GetCreatedAt().AsTime().UTC()
	}
	return j
}

// jsonDeployment is one recorded deployment.
type jsonDeployment struct {
	Digest      string    `json:"digest"`
	Name        string    `json:"name"`
	Version     string    `json:"version"`
	Environment string    `json:"environment"`
	DeployedAt  time.Time `json:"deployed_at"`
}

func deploymentJSON(d *catalogv1.Deployment) jsonDeployment {
	j := jsonDeployment{Digest: d.GetDigest(), Name: d.GetName(), Version: d.GetVersion(), Environment: d.GetEnvironment()}
	if d.GetDeployedAt() != nil {
		j.DeployedAt = d.GetDeployedAt().AsTime().UTC()
	}
	return j
}

// jsonSearch is custody search --json: one page.
type jsonSearch struct {
	Artifacts   []jsonArtifact   `json:"artifacts"`
	Deployments []jsonDeployment `json:"deployments"`
	// NextPageToken is empty on the last page; pass it to --page-token
	// with the same filters.
	NextPageToken string `json:"next_page_token"`
}

// jsonSubject names what a log entry is about.
type jsonSubject struct {
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	Digest  string `json:"digest"`
}

// jsonEvent is one log entry of custody audit, verified.
type jsonEvent struct {
	Index          int64           `json:"index"`
	Type           string          `json:"type"`
	Actor          string          `json:"actor"`
	Time           time.Time       `json:"time"`
	Subject        jsonSubject     `json:"subject"`
	EnvelopeSHA256 string          `json:"envelope_sha256,omitempty"`
	Details        json.RawMessage `json:"details,omitempty"`
	// TreeSize is the size of the co-signed checkpoint the inclusion proof
	// was verified against.
	TreeSize uint64 `json:"tree_size"`
}

// jsonAudit is custody audit --json.
type jsonAudit struct {
	Digest string `json:"digest"`
	// TrustRootVersion is the version of the trust root every checkpoint
	// was verified against.
	TrustRootVersion int64       `json:"trust_root_version"`
	Events           []jsonEvent `json:"events"`
}

// jsonKey is the key version that signed an artifact's current envelope.
type jsonKey struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version int    `json:"version"`
	Status  string `json:"status"`
}

// jsonProvenance summarises the signed provenance.
type jsonProvenance struct {
	BuilderID    string `json:"builder_id"`
	SourceRepo   string `json:"source_repo"`
	SourceCommit string `json:"source_commit"`
	Dependencies int    `json:"dependencies"`
}

// jsonInventoryItem is one artifact of custody inventory.
type jsonInventoryItem struct {
	Artifact jsonArtifact `json:"artifact"`
	// Verified is true when the signature, the statement and the log
	// inclusion were verified against the trust root; Problem says why not.
	Verified    bool             `json:"verified"`
	Problem     string           `json:"problem,omitempty"`
	Key         *jsonKey         `json:"key,omitempty"`
	Provenance  *jsonProvenance  `json:"provenance,omitempty"`
	LogIndex    int64            `json:"log_index"`
	Deployments []jsonDeployment `json:"deployments"`
}

// jsonInventory is custody inventory --json.
type jsonInventory struct {
	TrustRootVersion int64               `json:"trust_root_version"`
	Artifacts        []jsonInventoryItem `json:"artifacts"`
	// Unverified counts the artifacts whose verification failed.
	Unverified int `json:"unverified"`
}

// jsonEdge is one lineage edge: artifact was built from dependency.
type jsonEdge struct {
	ArtifactDigest  string            `json:"artifact_digest"`
	ArtifactName    string            `json:"artifact_name"`
	ArtifactVersion string            `json:"artifact_version"`
	Dependency      string            `json:"dependency"`
	URI             string            `json:"uri,omitempty"`
	Name            string            `json:"name,omitempty"`
	DigestSet       map[string]string `json:"digest,omitempty"`
	Annotations     map[string]string `json:"annotations,omitempty"`
	Depth           int32             `json:"depth"`
}

func edgeJSON(e *catalogv1.LineageEdge) jsonEdge {
	return jsonEdge{ArtifactDigest: e.GetArtifactDigest(), ArtifactName: e.GetArtifactName(), ArtifactVersion: e.GetArtifactVersion(),
		Dependency: e.GetDependency(), URI: e.GetUri(), Name: e.GetName(), DigestSet: maps.Clone(e.GetDigest()),
		Annotations: maps.Clone(e.GetAnnotations()), Depth: e.GetDepth()}
}

// jsonLineage is custody lineage --json.
type jsonLineage struct {
	Node string `json:"node"`
	// Direction is "up" (ancestors) or "down" (descendants).
	Direction   string           `json:"direction"`
	Edges       []jsonEdge       `json:"edges"`
	Artifacts   []jsonArtifact   `json:"artifacts"`
	Deployments []jsonDeployment `json:"deployments"`
	Truncated   bool             `json:"truncated"`
}

// jsonLineagePath is custody lineage --path --json.
type jsonLineagePath struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Found is false when there is no path within the depth bound.
	Found bool `json:"found"`
	// Downward is true when "to" was built (transitively) from "from".
	Downward bool       `json:"downward"`
	Edges    []jsonEdge `json:"edges"`
}
