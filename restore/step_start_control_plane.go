package restore

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/kdr-io/kdr/pkicheck"
)

// StepStartControlPlane names the step that starts the control plane.
const StepStartControlPlane = "start-control-plane"

var stepStartControlPlane = stepDef{
	id:    StepStartControlPlane,
	title: "Start the control plane",
	why: "kube-apiserver, controller-manager and scheduler start on the restored etcd; starting them only now " +
		"means none of them serves from a stale watch cache. Restart every kubelet afterwards.",
	where:   EveryNode,
	applies: hasControlPlane,
	commands: []string{
		"cp {{.StagedManifests}}/*.yaml {{.KubeDir}}/manifests/",
		"kubectl --kubeconfig {{.KubeDir}}/admin.conf get --raw /readyz",
		"systemctl restart kubelet",
	},
	expect: "/readyz answers ok.",
	action: startControlPlane,
	check:  checkAPIServer,
}

func startControlPlane(ctx context.Context, e *Env) error {
	return e.Runner.StartControlPlane(ctx, e)
}

// StartControlPlane puts every other restored static pod manifest in place.
func (HostRunner) StartControlPlane(_ context.Context, e *Env) error {
	return installManifests(e, func(name string) bool { return name != "etcd.yaml" })
}

// hasControlPlane: the control-plane step is for kubeadm backups that hold
// static pod manifests.
func hasControlPlane(p *Plan, _ Node) bool {
	if p.Options.Topology != TopologyKubeadm {
		return false
	}
	for _, s := range p.Manifest.State.Sets {
		if s.Name == "manifests" && s.Files > 0 {
			return true
		}
	}
	return false
}

// checkAPIServer waits for /readyz of this node's API server, trusting
// the restored CA and authenticating with the restored admin kubeconfig.
// admin.conf came from a backup: it is read without following a symlink,
// and only its embedded CA, client certificate and key are used
// (pkicheck.ClientConfig refuses an exec plugin, an auth provider, a token
// or a file it names), and not its server: the plan says where the API
// server is.
func checkAPIServer(ctx context.Context, e *Env) error {
	root, err := openBeneath(e.Root)
	if err != nil {
		return fmt.Errorf("restore root: %w", err)
	}
	defer root.Close()
	rel := rootRel(hostPath(e.Plan.Options.KubernetesDir, "admin.conf"))
	raw, _, err := root.readFile(rel)
	if err != nil {
		return fmt.Errorf("restored admin kubeconfig: %w", err)
	}
	url := e.APIServer
	if url == "" {
		url = "https://" + hostPort(e.Node.IP, "6443")
	}
	cfg, err := pkicheck.ClientConfig(raw, url)
	if err != nil {
		return fmt.Errorf("restored admin kubeconfig %s: %w", root.at(rel), err)
	}
	tc, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return fmt.Errorf("restored admin kubeconfig %s: %w", root.at(rel), err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	return waitFor(ctx, "API server not ready", e.WaitTimeout, func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/readyz", nil)
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("API server %s: %w", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("API server %s/readyz: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	})
}
