package restore

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/testenv"
	"github.com/kdr-io/kdr/manifest"
)

// runningEtcd is a Runner for an etcd the test started itself.
type runningEtcd struct{}

func (runningEtcd) StopControlPlane(context.Context, *Env) error  { return nil }
func (runningEtcd) StartEtcd(context.Context, *Env) error         { return nil }
func (runningEtcd) StartControlPlane(context.Context, *Env) error { return nil }

// TestStartEtcdSaysWhy runs start-etcd against a real TLS etcd whose
// health the check cannot prove, and asserts that the failure kdr restore
// apply prints gives the reason, not just a deadline: an operator whose
// restored etcd CA does not match the member's certificate must read
// "x509" and not "context deadline exceeded".
func TestStartEtcdSaysWhy(t *testing.T) {
	cluster := testenv.StartEtcd(t, testenv.EtcdOptions{TLS: true})
	other := testenv.NewPKI(t, filepath.Join(t.TempDir(), "other"))
	tests := []struct {
		name string
		// ca is the etcd CA of the restored PKI; url the member's.
		ca, url string
		want    string
		wantErr any // an error type the failure wraps, nil for none
	}{
		{name: "the restored CA", ca: cluster.PKI.CA, url: cluster.Endpoints()[0]},
		{name: "a server certificate from another CA", ca: other.CA, url: cluster.Endpoints()[0],
			want: "x509: certificate signed by unknown authority", wantErr: new(x509.UnknownAuthorityError)},
		{name: "nothing listening", ca: cluster.PKI.CA, url: fmt.Sprintf("https://127.0.0.1:%d", testenv.FreePort(t)),
			want: "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := startEtcdEnv(t, cluster.PKI, tt.ca, tt.url)
			var printed error
			err := Apply(context.Background(), env, "m1", ApplyOptions{Until: StepStartEtcd, Progress: func(s Step, state string, err error) {
				if s.ID == StepStartEtcd && state == "failed" {
					printed = err
				}
			}})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("start-etcd against a member it trusts: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("start-etcd passed its check against a member it cannot prove")
			}
			for _, e := range []error{err, printed} {
				if e == nil || !strings.Contains(e.Error(), tt.want) || !strings.Contains(e.Error(), "etcd not healthy after") {
					t.Errorf("failure %q, want it to say etcd is not healthy because %q", e, tt.want)
				}
			}
			if tt.wantErr != nil && !errors.As(err, tt.wantErr) {
				t.Errorf("failure %v does not wrap a %T", err, tt.wantErr)
			}
		})
	}
}

// startEtcdEnv is an Env for node m1 at url whose journal has every step
// before start-etcd done, and whose restored PKI holds the test cluster's
// client certificate and ca as the etcd CA.
func startEtcdEnv(t *testing.T, pki *testenv.PKI, ca, url string) *Env {
	t.Helper()
	m := &manifest.Manifest{ID: "20261124T200000.000Z-000001", Cluster: "prod", Node: "m1",
		Inventory: config.Inventory{Hosts: []config.Host{{Name: "m1", IP: "127.0.0.1"}}}}
	// An external etcd's client credentials, where this test restores them.
	creds := &ClientTLS{CA: "/etc/ssl/etcd/ca.pem", Cert: "/etc/ssl/etcd/admin.pem", Key: "/etc/ssl/etcd/admin-key.pem"}
	plan, err := BuildPlan(m, Source{Kind: "local", Path: "/mnt/usb"}, Options{Topology: TopologySystemd, EtcdClientTLS: creds,
		Nodes: []Node{{Name: "m1", IP: "127.0.0.1", ClientURL: url, PeerURL: fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))}}})
	if err != nil {
		t.Fatal(err)
	}
	env := &Env{Plan: plan, Root: t.TempDir(), Runner: runningEtcd{}, WaitTimeout: 2 * time.Second}
	for dst, src := range map[string]string{creds.Cert: pki.ClientCert, creds.Key: pki.ClientKey, creds.CA: ca} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(env.path(dst)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(env.path(dst), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e, err := env.forNode("m1")
	if err != nil {
		t.Fatal(err)
	}
	j, err := openJournal(e.journalPath(), plan.BackupID, 0, "m1")
	if err != nil {
		t.Fatal(err)
	}
	steps, err := plan.NodeSteps("m1")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if s.ID == StepStartEtcd {
			break
		}
		j.entry(s.ID).State = StateDone
	}
	if err := j.save(); err != nil {
		t.Fatal(err)
	}
	return env
}

// An external etcd over https whose client credentials the config does not
// name cannot be checked: the step says what to set, not a TLS error.
func TestEtcdTLSUnknownCredentials(t *testing.T) {
	m := &manifest.Manifest{ID: "20261124T200000.000Z-000001", Cluster: "prod", Node: "m1",
		Inventory: config.Inventory{Hosts: []config.Host{{Name: "m1", IP: "127.0.0.1"}}}}
	plan, err := BuildPlan(m, Source{Kind: "local", Path: "/mnt/usb"}, Options{Topology: TopologySystemd})
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Plan: plan, Node: plan.Options.Nodes[0], Root: t.TempDir()}
	if _, err := e.etcdTLS(); err == nil || !strings.Contains(err.Error(), "etcd.tls") {
		t.Fatalf("https without known client credentials: %v, want a pointer to etcd.tls", err)
	}
	if got := etcdctlTLS(plan.Options); got != "" {
		t.Fatalf("etcdctl flags %q without credentials", got)
	}
}
