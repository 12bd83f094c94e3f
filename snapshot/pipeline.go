package snapshot

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// ErrPartial means the set is complete on some targets and not on others.
var ErrPartial = errors.New("backup incomplete on some targets")

// ErrSource marks a failure reading etcd, as opposed to writing a target;
// only those are retried on another member.
var ErrSource = errors.New("etcd source failed")

// Options is everything one backup of one cluster needs.
type Options struct {
	Cluster   string
	Etcd      EtcdOptions
	State     []config.FileSet
	Inventory config.Inventory
	// Root is where state paths are resolved; "/" unless testing or drilling.
	Root       string
	Recipients []crypto.Recipient
	// Signer signs the manifests; Trust, which must trust it, decides
	// which earlier set each manifest links to.
	Signer  *manifest.Signer
	Trust   *manifest.Trust
	Targets []storage.Target
	// Node names the host whose files are captured (default: hostname).
	Node       string
	KdrVersion string
	Logger     *slog.Logger
	// Progress, if set, is told the etcd bytes read so far.
	Progress func(read int64)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Result is what a backup did: the manifest it wrote and, per target,
// why the set is not complete there.
type Result struct {
	Manifest *manifest.Manifest
	// Complete names the targets that hold the whole set.
	Complete []string
	// Failed maps target names to the reason the set is not complete there.
	Failed map[string]error
}

// Backup takes one backup of one cluster to every target. It returns an
// error wrapping ErrPartial when some targets failed, and a plain error
// when none holds a complete set. The Result, when not nil, says per
// target what happened, also when no target holds the set.
func Backup(ctx context.Context, o Options) (*Result, error) {
	b, err := newBackup(o)
	if err != nil {
		return nil, err
	}
	return b.run(ctx)
}

type backup struct {
	o    Options
	log  *slog.Logger
	m    *manifest.Manifest
	live []storage.Target
	// prev is each target's newest manifest link before this backup.
	prev map[string]*manifest.Link
	// chainWarn says, per target, why its chain restarts with this set.
	chainWarn map[string]string
	failed    map[string]error
}

func newBackup(o Options) (*backup, error) {
	if len(o.Targets) == 0 {
		return nil, errors.New("backup: no targets")
	}
	if len(o.Recipients) == 0 {
		return nil, errors.New("backup: no recipients: backups are always encrypted")
	}
	if o.Signer == nil || o.Trust == nil {
		return nil, errors.New("backup: no signing key: readers trust only signed sets")
	}
	if !manifest.ValidCluster(o.Cluster) {
		return nil, fmt.Errorf("backup: cluster name %q cannot name objects", o.Cluster)
	}
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
	var random [3]byte
	if _, err := rand.Read(random[:]); err != nil {
		return nil, fmt.Errorf("backup id: %w", err)
	}
	now := o.Now().UTC()
	fps := make([]string, len(o.Recipients))
	for i, r := range o.Recipients {
		fps[i] = r.Fingerprint
	}
	id := manifest.NewID(now, random)
	return &backup{
		o:   o,
		log: o.Logger.With("cluster", o.Cluster, "backup", id),
		m: &manifest.Manifest{
			FormatVersion: manifest.FormatVersion,
			KdrVersion:    o.KdrVersion,
			ID:            id,
			Cluster:       o.Cluster,
			Created:       now,
			Node:          o.Node,
			Recipients:    fps,
			Inventory:     o.Inventory,
		},
		live:      append([]storage.Target(nil), o.Targets...),
		prev:      map[string]*manifest.Link{},
		chainWarn: map[string]string{},
		failed:    map[string]error{},
	}, nil
}

func (b *backup) run(ctx context.Context) (*Result, error) {
	plan, err := planState(b.o.Root, b.o.State)
	if err != nil {
		return nil, err
	}
	b.m.Warnings = append(b.m.Warnings, plan.warnings...)
	info, err := inspect(ctx, b.o.Etcd, b.log)
	if err != nil {
		return nil, err
	}
	b.m.Etcd.ClusterID = strconv.FormatUint(info.id, 16)
	b.m.Etcd.Members = info.members
	b.readPrevious(ctx)

	// The small state object goes first: if the etcd upload is then cut
	// off, the set is visible as incomplete and prune can find and remove
	// the unfinished upload by its key.
	if err := b.putState(ctx, plan); err != nil {
		return b.lost(), err
	}
	if err := b.putEtcd(ctx, info.candidates); err != nil {
		return b.lost(), err
	}
	b.m.Completed = b.o.Now().UTC()
	return b.putManifests(ctx)
}

// lost is the Result of a backup that stopped before its manifests: when
// it stopped because every target had failed, each target's reason, so a
// caller counts the failures by target; nil when the source failed.
func (b *backup) lost() *Result {
	if len(b.live) > 0 || len(b.failed) == 0 {
		return nil
	}
	return &Result{Manifest: b.m, Failed: b.failed}
}

// readPrevious finds each target's newest complete manifest for the chain.
// A target that cannot be read now will fail the upload too; an unreadable
// previous manifest is recorded, not fatal: a backup must still happen.
func (b *backup) readPrevious(ctx context.Context) {
	for _, t := range b.live {
		m, sum, err := catalog.Latest(ctx, t, b.o.Trust, b.o.Cluster)
		switch {
		case err == nil:
			b.prev[t.Name()] = &manifest.Link{ID: m.ID, SHA256: sum}
		case errors.Is(err, catalog.ErrNoBackup):
		default:
			// Said in the manifest, so a verifier can tell a chain restarted
			// for this reason from one cut by a deleted backup.
			b.log.Warn("previous manifest unreadable", "target", t.Name(), "err", err)
			b.chainWarn[t.Name()] = fmt.Sprintf("previous manifest unreadable, chain restarts here: %v", err)
		}
	}
}

// maxEtcdAttempts: the first member, then once more on another.
const maxEtcdAttempts = 2

func (b *backup) putEtcd(ctx context.Context, candidates []member) error {
	var errs []error
	for i, m := range candidates {
		if i == maxEtcdAttempts {
			break
		}
		err := b.putEtcdFrom(ctx, m)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if !errors.Is(err, ErrSource) || ctx.Err() != nil {
			break
		}
		b.log.Warn("snapshot failed, trying another member", "member", m.name, "endpoint", m.endpoint, "err", err)
	}
	return errors.Join(errs...)
}

func (b *backup) putEtcdFrom(ctx context.Context, m member) error {
	b.log.Info("streaming etcd snapshot", "member", m.name, "endpoint", m.endpoint, "leader", m.leader)
	snap, err := openSnapshot(ctx, b.o.Etcd, m)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSource, err)
	}
	defer snap.Close()
	var read int64
	// The snapshot reader hashes every byte to check etcd's trailing hash;
	// its sum of the whole stream is the plaintext's.
	obj, err := b.putObject(ctx, manifest.EtcdObject, manifest.KindEtcdSnapshot, snap.reader.SHA256, func(w io.Writer) error {
		buf := make([]byte, 1<<20)
		for {
			n, rerr := snap.reader.Read(buf)
			if n > 0 {
				if _, err := w.Write(buf[:n]); err != nil {
					return err
				}
				read += int64(n)
				if b.o.Progress != nil {
					b.o.Progress(read)
				}
			}
			if rerr == io.EOF {
				return nil
			}
			if rerr != nil {
				return fmt.Errorf("%w: member %s (%s): %w", ErrSource, m.name, m.endpoint, rerr)
			}
		}
	})
	if err != nil {
		return err
	}
	e := &b.m.Etcd
	e.SnapshotMember = m.name
	e.ServerVersion = m.version
	e.StorageVersion = snap.storageVersion
	e.Revision = snap.revision
	e.DBSize = snap.reader.DBSize()
	select {
	case h := <-snap.hashKV:
		if h.err != nil {
			e.HashKVError = h.err.Error()
			b.m.Warnings = append(b.m.Warnings, fmt.Sprintf("HashKV at revision %d failed: %v", snap.revision, h.err))
		} else {
			e.HashKV, e.CompactRevision = h.hash, h.compactRevision
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	b.m.Objects = append(b.m.Objects, obj)
	return nil
}

func (b *backup) putState(ctx context.Context, plan *statePlan) error {
	var capture *stateCapture
	obj, err := b.putObject(ctx, manifest.StateObject, manifest.KindState, nil, func(w io.Writer) error {
		var err error
		capture, err = plan.writeState(w, b.o.Node)
		return err
	})
	if err != nil {
		return err
	}
	b.m.Objects = append(b.m.Objects, obj)
	b.m.State.Sets = plan.sets
	b.m.State.ControlPlane = plan.controlPlane
	b.m.State.Certificates = capture.certificates
	return nil
}

// putObject streams what produce writes through the format's writer
// (zstd, age) to every live target at once. plainSum, if not nil, gives
// the sha256 of what produce wrote, when produce hashes it anyway.
// Targets that fail drop out; the object fails only when none is left or
// produce fails.
func (b *backup) putObject(ctx context.Context, name, kind string, plainSum func() string, produce func(io.Writer) error) (manifest.Object, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fan := newFanout(ctx, b.live, manifest.Key(b.o.Cluster, b.m.ID, name))
	w, err := manifest.NewObjectWriter(fan, b.o.Recipients, manifest.WriteOptions{Name: name, Kind: kind, PlainSHA256: plainSum})
	if err != nil {
		fan.abort(err)
		return manifest.Object{}, fmt.Errorf("encrypt %s: %w", name, err)
	}
	var obj manifest.Object
	if err = produce(w); err == nil {
		obj, err = w.Close()
	} else {
		w.Abort()
	}
	switch {
	case err == nil:
		fan.finish()
	case fan.dead():
		// Every target failed mid-stream, and Write waited for their Puts:
		// the failure is theirs, and is counted as theirs below.
		fan.abort(err)
	default:
		fan.abort(err)
		return manifest.Object{}, fmt.Errorf("write %s: %w", name, err)
	}
	for target, terr := range fan.failures() {
		b.dropTarget(target, fmt.Errorf("write %s: %w", name, terr))
	}
	if len(b.live) == 0 {
		return manifest.Object{}, fmt.Errorf("write %s: every target failed: %w", name, b.targetErrors())
	}
	return obj, nil
}

func (b *backup) dropTarget(name string, err error) {
	b.log.Error("target failed", "target", name, "err", err)
	b.failed[name] = err
	live := b.live[:0]
	for _, t := range b.live {
		if t.Name() != name {
			live = append(live, t)
		}
	}
	b.live = live
}

func (b *backup) targetErrors() error {
	var errs []error
	for name, err := range b.failed {
		errs = append(errs, fmt.Errorf("target %s: %w", name, err))
	}
	return errors.Join(errs...)
}

// putManifests writes each live target's manifest, linked to that target's
// previous one. It goes last: its presence is what makes the set complete.
func (b *backup) putManifests(ctx context.Context) (*Result, error) {
	res := &Result{Manifest: b.m, Failed: b.failed}
	for _, t := range b.live {
		m := *b.m
		m.Previous = b.prev[t.Name()]
		if w := b.chainWarn[t.Name()]; w != "" {
			m.Warnings = append(slices.Clip(m.Warnings), w)
		}
		data, err := m.Marshal()
		if err != nil {
			return nil, err
		}
		key := manifest.Key(b.o.Cluster, b.m.ID, manifest.ManifestObject)
		if err := manifest.PutSigned(ctx, t, key, data, manifest.NamespaceManifest, b.o.Signer, storage.PutOptions{ContentType: "application/json"}); err != nil {
			b.failed[t.Name()] = fmt.Errorf("write %s: %w", manifest.ManifestObject, err)
			continue
		}
		res.Complete = append(res.Complete, t.Name())
	}
	switch {
	case len(res.Complete) == 0:
		return res, fmt.Errorf("backup %s of %s: no target holds a complete set: %w", b.m.ID, b.o.Cluster, b.targetErrors())
	case len(b.failed) > 0:
		return res, fmt.Errorf("%w: backup %s of %s: %w", ErrPartial, b.m.ID, b.o.Cluster, b.targetErrors())
	}
	b.log.Info("backup complete", "targets", res.Complete, "revision", b.m.Etcd.Revision, "dbSize", b.m.Etcd.DBSize)
	return res, nil
}
