package restore

import (
	"strings"
	"testing"

	"github.com/kdr-io/kdr/config"

	"github.com/kdr-io/kdr/manifest"
)

// The data dir defaults to where the backed-up etcd kept its data, as
// the backup recorded it for either topology; an explicit one wins.
func TestOptionsDataDir(t *testing.T) {
	kubeadm := &manifest.ControlPlane{EtcdManifest: "/etc/kubernetes/manifests/etcd.yaml", EtcdDataDir: "/srv/etcd-disk/data"}
	systemd := &manifest.ControlPlane{Manifests: []string{}, EtcdName: "etcd1", EtcdDataDir: "/srv/etcd"}
	for _, tc := range []struct {
		name, topology, dataDir string
		cp                      *manifest.ControlPlane
		want                    string
	}{
		{name: "nothing recorded", topology: TopologySystemd, want: "/var/lib/etcd"},
		{name: "etcd manifest", topology: TopologyKubeadm, cp: kubeadm, want: "/srv/etcd-disk/data"},
		{name: "etcd environment file", topology: TopologySystemd, cp: systemd, want: "/srv/etcd"},
		{name: "explicit", topology: TopologySystemd, cp: systemd, dataDir: "/data/etcd", want: "/data/etcd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &manifest.Manifest{ID: "20260101T000000.000Z-010203",
				Inventory: manifest.Inventory{Hosts: []manifest.Host{{Name: "node1", IP: "10.0.0.11"}}}}
			m.State.ControlPlane = tc.cp
			o, err := Options{Topology: tc.topology, EtcdDataDir: tc.dataDir}.withDefaults(m)
			if err != nil {
				t.Fatal(err)
			}
			if o.EtcdDataDir != tc.want {
				t.Errorf("data dir %s, want %s", o.EtcdDataDir, tc.want)
			}
		})
	}
}

// A directory joined to the restore root must be absolute and clean: a
// relative one or one with ".." would put the restore somewhere else.
func TestOptionsRefuseDirsOutsideTheRoot(t *testing.T) {
	m := &manifest.Manifest{ID: "20261124T200000.000Z-000001", Cluster: "prod", Node: "cp1",
		Inventory: config.Inventory{Hosts: []config.Host{{Name: "cp1", IP: "10.0.0.11"}}}}
	for _, o := range []Options{
		{EtcdDataDir: "var/lib/etcd"},
		{EtcdDataDir: "/var/lib/../../etc"},
		{KubernetesDir: "/"},
		{StagingDir: "/var/lib/kdr/../../../tmp"},
	} {
		if _, err := BuildPlan(m, Source{Kind: "local", Path: "/mnt/usb"}, o); err == nil || !strings.Contains(err.Error(), "absolute, clean path") {
			t.Errorf("%+v: %v, want a refusal", o, err)
		}
	}
}
