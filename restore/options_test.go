package restore

import (
	"testing"

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
