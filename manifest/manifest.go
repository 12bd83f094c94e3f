package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// FormatVersion is the version of the set format this code writes. A reader
// refuses a manifest from a newer format rather than misreading it. Format
// 2 signs every object a reader trusts; format 1 sets are unsigned and are
// read only when an operator names one by the hash of its manifest.
const FormatVersion = 2

// Object names inside a set.
const (
	EtcdObject     = "etcd.db.zst.age"
	StateObject    = "state.tar.zst.age"
	ManifestObject = "manifest.json"
)

// Object kinds recorded in the manifest.
const (
	KindEtcdSnapshot = "etcd-snapshot"
	KindState        = "state"
)

// StateIndexPath is the last entry of the state tar: the index of every
// captured file with its sha256.
const StateIndexPath = ".kdr/index.json"

// maxManifestSize bounds what Parse reads: a manifest is a few KiB; a huge
// one is damage or an attack, not a backup.
const maxManifestSize = 16 << 20

// ErrNewerFormat is returned for a manifest written by a newer kdr.
var ErrNewerFormat = errors.New("manifest format is newer than this kdr understands")

// ErrInvalid marks a manifest that does not parse or is not self-consistent.
var ErrInvalid = errors.New("invalid manifest")

// Manifest describes one complete backup set.
type Manifest struct {
	FormatVersion int       `json:"formatVersion"`
	KdrVersion    string    `json:"kdrVersion"`
	ID            string    `json:"id"`
	Cluster       string    `json:"cluster"`
	Created       time.Time `json:"created"`
	Completed     time.Time `json:"completed"`
	// Node is the host whose files the state object holds.
	Node       string   `json:"node"`
	Etcd       Etcd     `json:"etcd"`
	Objects    []Object `json:"objects"`
	Recipients []string `json:"recipients"`
	State      State    `json:"state"`
	// Inventory is copied from the config so that runbooks and restores know
	// the hosts without the config file.
	Inventory Inventory `json:"inventory"`
	// Previous links this manifest to the newest complete manifest of the
	// same cluster that was on the same target when this one was written.
	Previous *Link    `json:"previous,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// Etcd is what the backup recorded about the etcd cluster.
type Etcd struct {
	ClusterID string   `json:"clusterID"`
	Members   []Member `json:"members"`
	// SnapshotMember is the name of the member that streamed the snapshot.
	SnapshotMember string `json:"snapshotMember"`
	// Revision is the member's revision just before the snapshot began; the
	// snapshot holds at least this revision, so HashKV can be recomputed at
	// it from the snapshot alone.
	Revision        int64 `json:"revision"`
	CompactRevision int64 `json:"compactRevision"`
	// HashKV is etcd's hash of the keyspace at Revision; zero with
	// HashKVError set when the member could not compute it.
	HashKV      uint32 `json:"hashKV"`
	HashKVError string `json:"hashKVError,omitempty"`
	// DBSize is the size of the snapshot file without etcd's trailing sha256.
	DBSize         int64  `json:"dbSize"`
	ServerVersion  string `json:"serverVersion,omitempty"`
	StorageVersion string `json:"storageVersion,omitempty"`
}

// Member is one etcd member at backup time.
type Member struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	IsLearner  bool     `json:"isLearner,omitempty"`
}

// Object is one stored object of the set.
type Object struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// PlainSize and PlainSHA256 are of the content before compression.
	PlainSize   int64  `json:"plainSize"`
	PlainSHA256 string `json:"plainSHA256"`
	// Size and SHA256 are of the stored (compressed, encrypted) bytes.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// State summarises the off-etcd files of the set.
type State struct {
	Sets         []FileSet     `json:"sets"`
	Certificates []Certificate `json:"certificates,omitempty"`
	// ControlPlane is what the captured static pod manifests, or an etcd
	// environment file, say; absent when the state holds neither.
	ControlPlane *ControlPlane `json:"controlPlane,omitempty"`
}

// ReferencedSet is the state set of the files the captured static pod
// manifests reference that no configured set names: captured, and
// required, all the same.
const ReferencedSet = "referenced"

// ControlPlane is the topology of the node a backup was taken on, read
// from its static pod manifests and, when no static pod runs etcd, from
// the environment file of an etcd under systemd (/etc/etcd.env): the
// topology is kubeadm's when EtcdManifest is set, external etcd when it
// is not. A restore takes etcd's data dir from it, and the runbook prints
// it, without the identity that opens the state.
type ControlPlane struct {
	// Manifests are the host paths of the static pod manifests read.
	Manifests []string `json:"manifests"`
	// EtcdManifest is the host path of etcd's manifest ("" when etcd does
	// not run as a static pod).
	EtcdManifest string `json:"etcdManifest,omitempty"`
	// EtcdName is the member's --name, or ETCD_NAME in the environment
	// file of an etcd under systemd.
	EtcdName string `json:"etcdName,omitempty"`
	// EtcdDataDir is the host directory mounted at etcd's --data-dir, or
	// ETCD_DATA_DIR in the environment file of an etcd under systemd.
	EtcdDataDir string `json:"etcdDataDir,omitempty"`
	// APIServerAddress is kube-apiserver's --advertise-address.
	APIServerAddress string `json:"apiServerAddress,omitempty"`
	// References are the host files the components read, each captured.
	References []Reference `json:"references,omitempty"`
}

// Reference is one host file a control-plane component reads.
type Reference struct {
	Component string `json:"component"`
	// Flag names the file, or the config that names it (Via).
	Flag string `json:"flag"`
	Via  string `json:"via,omitempty"`
	Path string `json:"path"`
}

// FileSet is one configured file set as captured.
type FileSet struct {
	Name     string `json:"name"`
	Required bool   `json:"required"`
	// Paths are the set's configured patterns: a restore writes only paths
	// they match, so a backup cannot place a file anywhere else.
	Paths []string `json:"paths"`
	Files int      `json:"files"`
	Bytes int64    `json:"bytes"`
	// Missing lists patterns of an optional set that matched nothing.
	Missing []string `json:"missing,omitempty"`
}

// Certificate is what the backup recorded of one captured certificate.
type Certificate struct {
	Path      string    `json:"path"`
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	DNSNames  []string  `json:"dnsNames,omitempty"`
	IPs       []string  `json:"ips,omitempty"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	IsCA      bool      `json:"isCA,omitempty"`
}

// Link names another manifest by ID and the sha256 of its bytes.
type Link struct {
	ID     string `json:"id"`
	SHA256 string `json:"sha256"`
}

// Object returns the named object's record.
func (m *Manifest) Object(name string) (Object, bool) {
	for _, o := range m.Objects {
		if o.Name == name {
			return o, true
		}
	}
	return Object{}, false
}

// Marshal renders the manifest as stored: indented JSON with a final newline.
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// Parse decodes and checks a stored manifest. Unknown fields are refused
// within the same format version: a field we do not know is a field we
// cannot check.
func Parse(r io.Reader) (*Manifest, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	if len(data) > maxManifestSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, maxManifestSize)
	}
	var probe struct {
		FormatVersion int `json:"formatVersion"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if probe.FormatVersion > FormatVersion {
		return nil, fmt.Errorf("%w (format %d, this kdr reads up to %d)", ErrNewerFormat, probe.FormatVersion, FormatVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

var (
	idPattern      = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{6}$`)
	clusterPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)
	sha256Pattern  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Validate checks the fields that readers rely on.
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case m.FormatVersion < 1:
		return bad("formatVersion %d", m.FormatVersion)
	case !ValidID(m.ID):
		return bad("id %q", m.ID)
	case !ValidCluster(m.Cluster):
		return bad("cluster %q", m.Cluster)
	case m.Created.IsZero():
		return bad("created time missing")
	}
	seen := map[string]bool{}
	for _, o := range m.Objects {
		if o.Name != EtcdObject && o.Name != StateObject {
			return bad("unknown object %q", o.Name)
		}
		if seen[o.Name] {
			return bad("object %q listed twice", o.Name)
		}
		seen[o.Name] = true
		if !sha256Pattern.MatchString(o.SHA256) || !sha256Pattern.MatchString(o.PlainSHA256) {
			return bad("object %q: sha256 must be 64 hex digits", o.Name)
		}
		if o.Size < 0 || o.PlainSize < 0 {
			return bad("object %q: negative size", o.Name)
		}
	}
	if !seen[EtcdObject] {
		return bad("no %s object", EtcdObject)
	}
	if m.Previous != nil && (!ValidID(m.Previous.ID) || !sha256Pattern.MatchString(m.Previous.SHA256)) {
		return bad("previous link %q", m.Previous.ID)
	}
	return nil
}

// ValidID reports whether s has the shape of a backup ID.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// ValidCluster reports whether s can name a cluster in object keys.
func ValidCluster(s string) bool { return clusterPattern.MatchString(s) }

// idTimeLayout keeps milliseconds: IDs must sort in the order backups
// started, also for two backups in the same second, or the hash chain
// would link them the wrong way round.
const idTimeLayout = "20060102T150405.000Z"

// NewID makes a backup ID: the UTC start time, so IDs sort by age, and
// random hex so two backups in the same millisecond cannot collide.
func NewID(t time.Time, random [3]byte) string {
	return t.UTC().Format(idTimeLayout) + "-" + hex.EncodeToString(random[:])
}

// IDTime returns the time encoded in a backup ID.
func IDTime(id string) (time.Time, error) {
	if !ValidID(id) {
		return time.Time{}, fmt.Errorf("%q is not a backup ID", id)
	}
	return time.Parse(idTimeLayout, id[:len(idTimeLayout)])
}

// Sum is the hex sha256 used for every hash in the format.
func Sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// SetPrefix is the key prefix of one set: "<cluster>/<id>/".
func SetPrefix(cluster, id string) string { return cluster + "/" + id + "/" }

// Key is the key of one object of a set.
func Key(cluster, id, object string) string { return SetPrefix(cluster, id) + object }

// SplitKey parses "<cluster>/<id>/<object>"; ok is false for keys outside the layout.
func SplitKey(key string) (cluster, id, object string, ok bool) {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) != 3 || !ValidCluster(parts[0]) || !ValidID(parts[1]) || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}
