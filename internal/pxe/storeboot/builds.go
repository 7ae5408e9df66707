package storeboot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/store"
)

// JobKind is the kind of the jobs that build installer images.
const JobKind = "netboot"

// Builder builds a netboot image from an installable of the flake (pxe.NixBuild).
type Builder interface {
	Build(ctx context.Context, installable string, log io.Writer) (imageID string, err error)
}

// BuildStore is the part of *store.Store that Builds uses.
type BuildStore interface {
	NewJob(ctx context.Context, kind string, cluster, member *string, params json.RawMessage) (*store.Job, error)
	Machine(ctx context.Context, mac string) (*store.Machine, error)
	UpdateMachine(ctx context.Context, actor, mac string, c store.MachineChange) (*store.Machine, error)
	StateSets() *store.StateSets
}

// Builds implements Images by building each armed install's installer as a job of kind JobKind (the build log
// is the job's log; run by the daemon's job runner through Handle). A failed build moves the machine to
// install_failed, naming the job. Built images are remembered by this daemon (the store paths stay in the
// Nix store; after a restart the next request builds again, which Nix answers from its store).
type Builds struct {
	Store   BuildStore
	Builder Builder
	// Wake, when set, tells the job runner a job is queued.
	Wake func()

	mu     sync.Mutex
	built  map[string]string // "<mac>/<generation>" -> image ID
	queued map[string]bool
}

type buildParams struct {
	MAC        string `json:"mac"`
	Generation int64  `json:"generation"`
}

func buildKey(mac string, gen int64) string { return fmt.Sprintf("%s/%d", mac, gen) }

// Installer implements Images.
func (b *Builds) Installer(ctx context.Context, m *store.Machine) (string, error) {
	key := buildKey(m.MAC, m.InstallGeneration)
	b.mu.Lock()
	defer b.mu.Unlock()
	if id, ok := b.built[key]; ok {
		return id, nil
	}
	if b.queued[key] {
		return "", ErrBuilding
	}
	params, _ := json.Marshal(buildParams{MAC: m.MAC, Generation: m.InstallGeneration})
	if _, err := b.Store.NewJob(ctx, JobKind, m.Cluster, m.Member, params); err != nil {
		return "", err
	}
	if b.queued == nil {
		b.queued = map[string]bool{}
	}
	b.queued[key] = true
	if b.Wake != nil {
		b.Wake()
	}
	return "", ErrBuilding
}

// Handle runs one build job (a jobs.Handler).
func (b *Builds) Handle(ctx context.Context, j *store.Job, log io.Writer) (any, error) {
	var p buildParams
	if err := json.Unmarshal(j.Params, &p); err != nil || j.Cluster == nil || j.Member == nil {
		return nil, fmt.Errorf("a netboot job needs a cluster, a member and {mac, generation}: %v", err)
	}
	id, err := b.Builder.Build(ctx, pxe.MemberInstallable(*j.Cluster, *j.Member), log)
	key := buildKey(p.MAC, p.Generation)
	b.mu.Lock()
	delete(b.queued, key)
	if err == nil {
		if b.built == nil {
			b.built = map[string]string{}
		}
		b.built[key] = id
	}
	b.mu.Unlock()
	if err != nil {
		b.fail(context.WithoutCancel(ctx), j, p, err)
		return nil, err
	}
	return map[string]string{"image": id}, nil
}

// fail moves the machine to installing's failed state (install_failed) when it still waits for this build (same
// generation, armed).
func (b *Builds) fail(ctx context.Context, j *store.Job, p buildParams, cause error) {
	m, err := b.Store.Machine(ctx, p.MAC)
	if err != nil || m.State != store.StateInstalling || !m.InstallArmed || m.InstallGeneration != p.Generation {
		return
	}
	failed, _ := b.Store.StateSets().FailureOf(store.StateInstalling)
	b.Store.UpdateMachine(ctx, fmt.Sprintf("job:%d", j.ID), p.MAC, store.MachineChange{Version: m.Version, State: &failed,
		Reason: fmt.Sprintf("building the installer failed (its log is job %d): %v", j.ID, cause)})
}

// DirInstallers implements Images with prebuilt images: Dir/<cluster>-<member>/{bzImage,initrd,cmdline}.
type DirInstallers struct{ Dir string }

// Installer implements Images.
func (d DirInstallers) Installer(ctx context.Context, m *store.Machine) (string, error) {
	id := *m.Cluster + "-" + *m.Member
	if _, err := (pxe.DirImages{Dir: d.Dir}).Image(ctx, id); err != nil {
		if errors.Is(err, pxe.ErrNotFound) {
			return "", fmt.Errorf("no installer image in %s: build it with nix build .#%s and copy it there",
				filepath.Join(d.Dir, id), pxe.MemberInstallable(*m.Cluster, *m.Member))
		}
		return "", err
	}
	return id, nil
}

// Exists reports whether Dir/id holds an image (for the discovery image at start).
func (d DirInstallers) Exists(id string) bool {
	_, err := os.Stat(filepath.Join(d.Dir, id, "bzImage"))
	return err == nil
}
