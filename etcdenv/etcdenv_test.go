package etcdenv

import (
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	env := Parse([]byte(`# kubespray's /etc/etcd.env
ETCD_DATA_DIR=/var/lib/etcd
; a comment systemd also skips
export ETCD_NAME="etcd1"
ETCD_CERT_FILE = '/etc/ssl/etcd/ssl/member-node1.pem'
ETCD_KEY_FILE=relative/key.pem
ETCD_LISTEN_CLIENT_URLS=https://10.0.0.11:2379
not an assignment
ETCD_DATA_DIR=/srv/etcd
`))
	for _, c := range []struct{ name, want string }{
		{DataDirVar, "/srv/etcd"}, // the last assignment wins, as systemd reads it
		{NameVar, "etcd1"},
		{"ETCD_LISTEN_CLIENT_URLS", "https://10.0.0.11:2379"},
	} {
		if got, ok := env.Get(c.name); !ok || got != c.want {
			t.Errorf("%s = %q, %v; want %q", c.name, got, ok, c.want)
		}
	}
	if got, ok := env.Get("ETCD_INITIAL_CLUSTER"); ok {
		t.Errorf("ETCD_INITIAL_CLUSTER = %q, not in the file", got)
	}
	// A relative path is not a file kdr can find: the unit's working
	// directory is not in the file.
	want := []Var{{"ETCD_CERT_FILE", "/etc/ssl/etcd/ssl/member-node1.pem"}}
	if got := env.Files(); !reflect.DeepEqual(got, want) {
		t.Errorf("Files() = %v, want %v", got, want)
	}
}

func TestSet(t *testing.T) {
	in := "# kubespray\nETCD_NAME=node1\nETCD_DATA_DIR=\"/var/lib/etcd\"\n# ETCD_NAME=commented\nETCD_CERT_FILE=/etc/ssl/etcd/ssl/member-node1.pem\n"
	got := string(Set([]byte(in), []Var{{"ETCD_NAME", "node2"}, {"ETCD_DATA_DIR", "/srv/etcd"}, {"ETCD_INITIAL_CLUSTER_TOKEN", "kdr-x"}}))
	want := "# kubespray\nETCD_NAME=node2\nETCD_DATA_DIR=/srv/etcd\n# ETCD_NAME=commented\nETCD_CERT_FILE=/etc/ssl/etcd/ssl/member-node1.pem\n"
	if got != want {
		t.Fatalf("Set:\n%s\nwant:\n%s", got, want)
	}
	env := Parse([]byte(got))
	if v, _ := env.Get("ETCD_NAME"); v != "node2" {
		t.Fatalf("ETCD_NAME %q after Set", v)
	}
}
