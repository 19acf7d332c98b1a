package admission

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// gatedDeployments answers DeployedVersions with the versions stored at
// the moment each read starts, after release is closed if set.
type gatedDeployments struct {
	mu       sync.Mutex
	versions map[deploymentKey][]string
	fail     map[deploymentKey]error
	reads    []deploymentKey
	started  chan deploymentKey
	release  chan struct{}
}

func (g *gatedDeployments) DeployedVersions(_ context.Context, name, env string) ([]string, error) {
	k := deploymentKey{name, env}
	g.mu.Lock()
	g.reads = append(g.reads, k)
	v, err := slices.Clone(g.versions[k]), g.fail[k]
	started, release := g.started, g.release
	g.mu.Unlock()
	if started != nil {
		started <- k
	}
	if release != nil {
		<-release
	}
	return v, err
}

func (g *gatedDeployments) set(k deploymentKey, v ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.versions[k] = v
}

// TestDeploymentsShared: admissions waiting together share one read per
// name and environment, an error reaches only its own, and an admission
// that calls while a read is out never gets that read's answer.
func TestDeploymentsShared(t *testing.T) {
	app, other, bad := deploymentKey{"app", "prod"}, deploymentKey{"other", "prod"}, deploymentKey{"bad", "prod"}
	g := &gatedDeployments{
		versions: map[deploymentKey][]string{app: {"1.0.0"}, other: {"2.0.0"}},
		fail:     map[deploymentKey]error{bad: errors.New("catalog down")},
		started:  make(chan deploymentKey, 64),
		release:  make(chan struct{}),
	}
	ds := newDeployments(g)
	ctx := context.Background()

	// A first read goes out at once and is held.
	first := make(chan []string, 1)
	go func() {
		v, err := ds.versions(ctx, app.name, app.env)
		if err != nil {
			t.Error(err)
		}
		first <- v
	}()
	<-g.started
	// Deployed after that read started: every admission from now on must
	// see it.
	g.set(app, "1.0.0", "1.1.0")
	type answer struct {
		k   deploymentKey
		v   []string
		err error
	}
	answers := make(chan answer, 30)
	for i := range 30 {
		k := []deploymentKey{app, other, bad}[i%3]
		go func() {
			v, err := ds.versions(ctx, k.name, k.env)
			answers <- answer{k, v, err}
		}()
	}
	for ds.reads.Waiting() < 30 {
		time.Sleep(time.Millisecond)
	}
	close(g.release)
	if v := <-first; !slices.Equal(v, []string{"1.0.0"}) {
		t.Errorf("first read: %q", v)
	}
	for range 30 {
		a := <-answers
		switch a.k {
		case app:
			if a.err != nil || !slices.Equal(a.v, []string{"1.0.0", "1.1.0"}) {
				t.Errorf("app after the deployment: %q, %v (a read older than the call was shared)", a.v, a.err)
			}
		case other:
			if a.err != nil || !slices.Equal(a.v, []string{"2.0.0"}) {
				t.Errorf("other: %q, %v", a.v, a.err)
			}
		case bad:
			if a.err == nil {
				t.Errorf("bad: %q, no error", a.v)
			}
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	// The held read, then one read of each of the three.
	if len(g.reads) != 4 {
		t.Errorf("reads %v, want 4", g.reads)
	}
}

// TestDeploymentsCallerOwnsSlice: an admission changing its answer does
// not change another's.
func TestDeploymentsCallerOwnsSlice(t *testing.T) {
	k := deploymentKey{"app", "prod"}
	g := &gatedDeployments{versions: map[deploymentKey][]string{k: {"1.0.0"}}, started: make(chan deploymentKey, 64), release: make(chan struct{})}
	ds := newDeployments(g)
	go func() {
		for range g.started {
		}
	}()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			v, err := ds.versions(context.Background(), k.name, k.env)
			if err != nil || !slices.Equal(v, []string{"1.0.0"}) {
				t.Errorf("%q, %v", v, err)
				return
			}
			v[0] = fmt.Sprint(i)
		})
	}
	close(g.release)
	wg.Wait()
	close(g.started)
}
