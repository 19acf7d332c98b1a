package admission

import (
	"context"
	"slices"
	"sync"

	"github.com/custody-dev/custody/libs/batch"
)

// deployments reads, for the rollback rule, which versions of a name were
// deployed to an environment, sharing one read among concurrent admissions
// of the same name to the same environment (a rollout admits many
// workloads of one artifact at once) but never one that started before
// they called: each batch holds only admissions that were waiting when it
// left, so what it reads is as fresh as what each would have read alone
// (decision 0117, as the trust sync of decision 0086). Distinct names or
// environments in one batch are read concurrently, each once; an error
// reaches only the admissions of its name and environment.
type deployments struct {
	d     Deployments
	reads *batch.Queue[deploymentKey, deploymentRead]
}

type deploymentKey struct{ name, env string }

type deploymentRead struct {
	versions []string
	err      error
}

// maxDeploymentBatch bounds the admissions one batch serves; more wait for
// the next.
const maxDeploymentBatch = 4096

func newDeployments(d Deployments) *deployments {
	ds := &deployments{d: d}
	// One batch in flight: an admission arriving while one is out joins
	// the next, which leaves when it returns, so it starts after the
	// admission.
	ds.reads = batch.New(1, maxDeploymentBatch, ds.readBatch)
	return ds
}

// versions returns the versions of name deployed to env, read after the
// call began. The caller may keep and change the slice.
func (ds *deployments) versions(ctx context.Context, name, env string) ([]string, error) {
	r, err := ds.reads.Do(ctx, deploymentKey{name, env})
	if err != nil {
		return nil, err
	}
	if r.err != nil {
		return nil, r.err
	}
	return slices.Clone(r.versions), nil
}

// readBatch reads each distinct name and environment of waiting once.
// ctx carries the first admission's values (its trace) but not its
// cancellation: the read is bounded by fetchTimeout.
func (ds *deployments) readBatch(ctx context.Context, waiting []deploymentKey) ([]deploymentRead, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	reads := map[deploymentKey]*deploymentRead{}
	var wg sync.WaitGroup
	for _, k := range waiting {
		if _, ok := reads[k]; ok {
			continue
		}
		r := &deploymentRead{}
		reads[k] = r
		wg.Go(func() { r.versions, r.err = ds.d.DeployedVersions(ctx, k.name, k.env) })
	}
	wg.Wait()
	out := make([]deploymentRead, len(waiting))
	for i, k := range waiting {
		out[i] = *reads[k]
	}
	return out, nil
}
