package drill

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// checkAPIServer starts the configured kube-apiserver on the restored
// etcd members with the restored PKI, on a loopback port, and lists the
// namespaces with the restored administrator kubeconfig: the objects
// written before the backup are served by a control plane built from it.
func checkAPIServer(ctx context.Context, rep *Report, bin, root, kubeDir, serviceCIDR string, etcd []string, work string) {
	const id = "kube-apiserver"
	fail := func(format string, a ...any) {
		rep.add(Check{ID: id, Subject: bin, Grade: Fail, Reason: fmt.Sprintf(format, a...)})
	}
	port, err := freePort()
	if err != nil {
		fail("%v", err)
		return
	}
	pki := filepath.Join(root, filepath.FromSlash(kubeDir), "pki")
	if serviceCIDR == "" {
		serviceCIDR = "10.96.0.0/12" // kubeadm's default
	}
	args := []string{
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--etcd-servers=" + strings.Join(etcd, ","),
		"--client-ca-file=" + filepath.Join(pki, "ca.crt"),
		"--tls-cert-file=" + filepath.Join(pki, "apiserver.crt"), "--tls-private-key-file=" + filepath.Join(pki, "apiserver.key"),
		"--service-account-key-file=" + filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(pki, "sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=Node,RBAC", "--allow-privileged=true",
		"--cert-dir=" + filepath.Join(work, "apiserver-certs"),
	}
	log, err := os.Create(filepath.Join(work, "kube-apiserver.log"))
	if err != nil {
		fail("%v", err)
		return
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	// The API server dies with the drill, however the drill ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fail("start: %v", err)
		return
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	cfg, err := adminConfig(filepath.Join(root, filepath.FromSlash(kubeDir)), port)
	if err != nil {
		fail("restored kubeconfig: %v", err)
		return
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fail("%v", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var names []string
	for {
		list, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, ns := range list.Items {
				names = append(names, ns.Name)
			}
			break
		}
		if ctx.Err() != nil {
			fail("no namespace list within 2 minutes: %s (its log: %s)", oneLine(err), lastLine(log.Name()))
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	slices.Sort(names)
	rep.APIServerSeconds = time.Since(start).Seconds()
	rep.add(Check{ID: id, Subject: bin, Grade: Pass, Reason: fmt.Sprintf("started on the restored etcd and PKI in %.1f s; the restored admin kubeconfig lists %d namespaces: %s",
		rep.APIServerSeconds, len(names), strings.Join(names, ", "))})
}

// adminConfig is the restored administrator's kubeconfig (super-admin.conf
// where kubeadm made one: its group needs no binding), pointed at the
// sandbox's API server. The server certificate names the cluster's
// service name, not the loopback address.
func adminConfig(kubeDir string, port int) (*rest.Config, error) {
	var err error
	for _, name := range []string{"super-admin.conf", "admin.conf"} {
		var cfg *rest.Config
		if cfg, err = clientcmd.BuildConfigFromFlags("", filepath.Join(kubeDir, name)); err == nil {
			cfg.Host = fmt.Sprintf("https://127.0.0.1:%d", port)
			cfg.TLSClientConfig.ServerName = "kubernetes"
			cfg.Timeout = 10 * time.Second
			return cfg, nil
		}
	}
	return nil, err
}

func lastLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
