package testenv

import (
	"strings"
	"testing"
	"time"
)

// TestNode checks the harness itself: a kubeadm node whose control plane
// runs as static pods in containers, and that leaves nothing behind (its
// cleanup fails the test otherwise).
func TestNode(t *testing.T) {
	n := StartNode(t, NewNetwork(t), NodeOptions{})
	want := []string{"etcd-cp1=Running", "kube-apiserver-cp1=Running", "kube-controller-manager-cp1=Running", "kube-scheduler-cp1=Running"}
	var out string
	Eventually(t, 2*time.Minute, "the control plane's mirror pods running", func() bool {
		out = n.Kubectl(t, "get", "pods", "-n", "kube-system", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.phase}{\"\\n\"}{end}")
		for _, w := range want {
			if !strings.Contains(out, w) {
				return false
			}
		}
		return true
	})
	// The Service of the API server goes through kube-proxy's rules.
	if got := n.Kubectl(t, "get", "--raw", "/readyz", "--server", "https://10.96.0.1:443"); got != "ok" {
		t.Errorf("the kubernetes Service answers %q, want ok", got)
	}
}
