package drill

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kdr-io/kdr/pkicheck"
)

// apiServerPort is the API server's port inside its private network
// namespace, which holds nothing else: kube-apiserver's usual one is free.
const apiServerPort = 6443

// checkAPIServer starts the configured kube-apiserver on the restored
// etcd members with the restored PKI, in a network namespace of its own,
// and lists the namespaces with the restored administrator kubeconfig:
// the objects written before the backup are served by a control plane
// built from it.
func checkAPIServer(ctx context.Context, rep *Report, bin, root, kubeDir, serviceCIDR string, etcd []string, work string) {
	const id = "kube-apiserver"
	fail := func(format string, a ...any) {
		rep.add(Check{ID: id, Subject: bin, Grade: Fail, Reason: fmt.Sprintf(format, a...)})
	}
	start := time.Now()
	as, err := startAPIServer(ctx, bin, root, kubeDir, serviceCIDR, etcd, work)
	if err != nil {
		fail("%v", err)
		return
	}
	defer as.stop()
	cs, err := kubernetes.NewForConfig(as.cfg)
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
			fail("no namespace list within 2 minutes: %s (its log: %s)", oneLine(err), lastLine(as.log))
			return
		}
		select {
		case <-as.exited:
			fail("exited: %s", lastLine(as.log))
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
	slices.Sort(names)
	rep.APIServerSeconds = time.Since(start).Seconds()
	rep.add(Check{ID: id, Subject: bin, Grade: Pass, Reason: fmt.Sprintf("started on the restored etcd and PKI, in a network namespace of its own, in %.1f s; the restored admin kubeconfig lists %d namespaces: %s",
		rep.APIServerSeconds, len(names), strings.Join(names, ", "))})
}

// apiServer is a kube-apiserver the drill started.
type apiServer struct {
	// cfg is the restored administrator's client config, dialling into
	// the API server's namespace.
	cfg *rest.Config
	// log is the API server's output file.
	log string
	// exited is closed when the API server has ended.
	exited <-chan struct{}
	stop   func()
}

// startAPIServer starts bin on the restored PKI below root and the etcd
// members at etcd (URLs on this host's loopback), in a private network
// namespace (privateNet): the restored objects name webhooks, aggregated
// APIs and services of the live cluster, and this API server must reach
// none of them. Its only way out is a forward to each etcd member; the
// returned config dials in. The restored encryption config is not passed,
// so no KMS plugin socket of the host is opened either.
func startAPIServer(ctx context.Context, bin, root, kubeDir, serviceCIDR string, etcd []string, work string) (_ *apiServer, err error) {
	// The kubeconfig is read before anything starts: a refused one fails
	// the check with nothing run.
	cfg, err := adminConfig(root, kubeDir, apiServerPort)
	if err != nil {
		return nil, fmt.Errorf("restored kubeconfig %w", err)
	}
	pn, err := newPrivateNet()
	if err != nil {
		return nil, err
	}
	fctx, stopForwards := context.WithCancel(ctx)
	var cmd *exec.Cmd
	var exited <-chan struct{}
	stop := func() {
		if exited != nil {
			cmd.Process.Kill()
			<-exited
		}
		stopForwards()
		pn.Close()
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	servers := make([]string, len(etcd))
	for i, ep := range etcd {
		u, err := url.Parse(ep)
		if err != nil {
			return nil, fmt.Errorf("etcd endpoint %q: %w", ep, err)
		}
		inside, err := pn.forward(fctx, u.Host)
		if err != nil {
			return nil, fmt.Errorf("forward to etcd %s: %w", ep, err)
		}
		servers[i] = u.Scheme + "://" + inside
	}
	pki := filepath.Join(root, filepath.FromSlash(kubeDir), "pki")
	if serviceCIDR == "" {
		serviceCIDR = "10.96.0.0/12" // kubeadm's default
	}
	args := []string{
		// The namespace has no default route to take an address from.
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", apiServerPort),
		"--etcd-servers=" + strings.Join(servers, ","),
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
		return nil, err
	}
	defer log.Close()
	cmd = exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	// The API server dies with the drill, however the drill ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if exited, err = pn.Start(cmd); err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	cfg.Dial = pn.DialContext
	return &apiServer{cfg: cfg, log: log.Name(), exited: exited, stop: stop}, nil
}

// adminConfig is the restored administrator's kubeconfig (super-admin.conf
// where kubeadm made one: its group needs no binding; admin.conf where it
// did not), pointed at the sandbox's API server. The server certificate
// names the cluster's service name, not the loopback address.
//
// The file comes from the backup, which anyone who can write to the
// target may have crafted: it is read inside the restored tree, so its
// links cannot reach the host's files, and only its embedded certificates
// and key are used; a command, a file or a proxy it names is refused, never
// run, read or used. A super-admin.conf that is there but refused or
// damaged is not passed over for admin.conf: it is a finding.
func adminConfig(root, kubeDir string, port int) (*rest.Config, error) {
	p := path.Join(kubeDir, "super-admin.conf")
	data, err := pkicheck.ReadFile(root, p)
	if errors.Is(err, fs.ErrNotExist) {
		p = path.Join(kubeDir, "admin.conf")
		data, err = pkicheck.ReadFile(root, p)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	cfg, err := pkicheck.ClientConfig(data, fmt.Sprintf("https://127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	cfg.TLSClientConfig.ServerName = "kubernetes"
	cfg.Timeout = 10 * time.Second
	return cfg, nil
}

func lastLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
