package testenv

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// netnsWait bounds the waits of these tests; etcd starts in about a
// second.
const netnsWait = 30 * time.Second

// TestNetworkHostsReachEachOther runs etcd in host a on a's address and
// reaches it from host b, while the test process, in the machine's own
// namespace, does not reach it and sees no trace of the network.
func TestNetworkHostsReachEachOther(t *testing.T) {
	linksBefore, routesBefore := rootLinks(t), rootRoutes(t)
	n := NewNetwork(t)
	a, b := n.AddHost(t, "a"), n.AddHost(t, "b")
	if want := strings.TrimSuffix(n.Subnet, "0/24"); !strings.HasPrefix(a.IP, want) || !strings.HasSuffix(a.IP, ".11") || b.IP != want+"12" {
		t.Fatalf("addresses a=%s b=%s, want .11 and .12 of %s", a.IP, b.IP, n.Subnet)
	}
	if got := b.Run(t, "ip", "-4", "-br", "addr", "show", "dev", "eth0"); !strings.Contains(got, b.IP+"/24") {
		t.Errorf("b's eth0: %q, want %s/24", got, b.IP)
	}

	nonce, _ := startNetnsEtcd(t, a, a.IP)
	endpoint := "http://" + net.JoinHostPort(a.IP, "2379")
	if err := etcdctlIn(b, endpoint, "endpoint", "health"); err != nil {
		t.Fatalf("b cannot reach etcd on a: %v", err)
	}
	// The member's random name proves that b reached this etcd, not just
	// something that answers on that address.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := b.Command(ctx, Binary(t, "etcdctl"), "--endpoints", endpoint, "--dial-timeout", "2s", "member", "list").CombinedOutput()
	if err != nil || !strings.Contains(string(out), nonce) {
		t.Fatalf("member list from b: %v: %s; want member %s", err, out, nonce)
	}

	// A machine's default route may lead to a gateway that accepts any
	// connection, so "connect fails" is not the check: what matters is
	// that whatever answers, if anything, is not a's etcd.
	if body, err := memberList(endpoint); err == nil && strings.Contains(body, nonce) {
		t.Errorf("the test process reached a's etcd at %s from the machine's namespace", endpoint)
	}
	if got := rootLinks(t); !slices.Equal(got, linksBefore) {
		t.Errorf("links in the machine's namespace changed:\nbefore %q\nafter  %q", linksBefore, got)
	}
	if got := rootRoutes(t); got != routesBefore {
		t.Errorf("routes in the machine's namespace changed:\nbefore %s\nafter  %s", routesBefore, got)
	}
}

// TestHostCommandEnvironment checks what a command in a host sees: the
// test's environment and working directory, and only the host's links.
func TestHostCommandEnvironment(t *testing.T) {
	h := NewNetwork(t).AddHost(t, "cp1")
	probe := fmt.Sprintf("probe-%d", rand.Int())
	t.Setenv("KDR_NETNS_PROBE", probe)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	wd, err = filepath.EvalSymlinks(wd)
	if err != nil {
		t.Fatal(err)
	}
	got := h.Run(t, "sh", "-c", `printf '%s\n' "$KDR_NETNS_PROBE"; pwd -P; ls /sys/class/net`)
	if want := probe + "\n" + wd + "\neth0\nlo"; got != want {
		t.Errorf("in host:\n%s\nwant\n%s", got, want)
	}
}

// TestHostIsolateRejoin cuts a host with a running etcd off the network
// and plugs it back in.
func TestHostIsolateRejoin(t *testing.T) {
	n := NewNetwork(t)
	a, b := n.AddHost(t, "a"), n.AddHost(t, "b")
	startNetnsEtcd(t, a, a.IP)
	endpoint := "http://" + net.JoinHostPort(a.IP, "2379")
	if err := etcdctlIn(b, endpoint, "endpoint", "health"); err != nil {
		t.Fatalf("before isolation: %v", err)
	}

	a.Isolate(t)
	if err := etcdctlIn(b, endpoint, "endpoint", "health"); err == nil {
		t.Fatal("b reaches a while a is isolated")
	}
	// The partition is in the network, not in a: a's etcd still serves a.
	if err := etcdctlIn(a, endpoint, "endpoint", "health"); err != nil {
		t.Fatalf("a's etcd, asked from a while isolated: %v", err)
	}

	a.Rejoin(t)
	Eventually(t, netnsWait, "b reaches a after rejoin", func() bool {
		return etcdctlIn(b, endpoint, "endpoint", "health") == nil
	})
}

// TestHostReplace replaces cp3 by a blank machine of the same name with a
// new address, as a restore onto a new node would meet it.
func TestHostReplace(t *testing.T) {
	n := NewNetwork(t)
	n.AddHost(t, "cp1")
	cp2 := n.AddHost(t, "cp2")
	old := n.AddHost(t, "cp3")
	_, exited := startNetnsEtcd(t, old, old.IP)
	oldEndpoint := "http://" + net.JoinHostPort(old.IP, "2379")
	if err := etcdctlIn(cp2, oldEndpoint, "endpoint", "health"); err != nil {
		t.Fatalf("cp2 to old cp3: %v", err)
	}

	old.Remove(t)
	select {
	case <-exited:
	case <-time.After(netnsWait):
		t.Fatal("etcd in the removed cp3 still runs")
	}
	if slices.Contains(netnsList(t), old.NS) {
		t.Fatalf("namespace %s still listed after Remove", old.NS)
	}
	if n.Host("cp3") != nil {
		t.Fatal("network still has cp3 after Remove")
	}
	old.Remove(t) // a second Remove is harmless

	cp3 := n.AddHost(t, "cp3")
	if cp3.IP == old.IP || !strings.HasSuffix(cp3.IP, ".14") {
		t.Fatalf("new cp3 has %s (old %s), want the next unused address, .14", cp3.IP, old.IP)
	}
	if cp3.NS != old.NS || n.Host("cp3") != cp3 {
		t.Fatalf("new cp3: namespace %s, want %s again", cp3.NS, old.NS)
	}
	// Blank: only the new address, nothing running.
	if got := cp3.Run(t, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); strings.Contains(got, old.IP+"/") || !strings.Contains(got, cp3.IP+"/24") {
		t.Fatalf("new cp3's eth0: %s", got)
	}
	newEndpoint := "http://" + net.JoinHostPort(cp3.IP, "2379")
	if err := etcdctlIn(cp2, newEndpoint, "endpoint", "health"); err == nil {
		t.Fatal("the blank cp3 answers as etcd")
	}

	startNetnsEtcd(t, cp3, cp3.IP)
	if err := etcdctlIn(cp2, newEndpoint, "endpoint", "health"); err != nil {
		t.Fatalf("cp2 to new cp3: %v", err)
	}
	if err := etcdctlIn(cp2, oldEndpoint, "endpoint", "health"); err == nil {
		t.Fatal("cp2 still reaches the old cp3's address")
	}
}

// TestIsolatedHost runs etcd on loopback in a host with no network: it
// serves the host itself, and nothing leaves the host.
func TestIsolatedHost(t *testing.T) {
	h := NewIsolatedHost(t, "offline")
	if h.IP != "" {
		t.Errorf("isolated host has IP %q", h.IP)
	}
	if got := h.Run(t, "ip", "-br", "link"); len(strings.Fields(got)) == 0 || strings.Fields(got)[0] != "lo" || strings.Count(got, "\n") != 0 {
		t.Errorf("links of an isolated host:\n%s\nwant lo only", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := h.Command(ctx, "ip", "route", "get", "198.18.0.1").CombinedOutput(); err == nil {
		t.Errorf("isolated host has a route out: %s", out)
	}
	// Port 2379 may be taken in the machine's namespace by another test;
	// in the host's own namespace it is free.
	startNetnsEtcd(t, h, "127.0.0.1")
	if err := etcdctlIn(h, "http://127.0.0.1:2379", "endpoint", "health"); err != nil {
		t.Fatalf("etcd on the isolated host's loopback: %v", err)
	}
}

// TestNetworkCleanup checks that a network's test leaves no namespace, no
// link in the machine's namespace, no process and no subnet claim.
func TestNetworkCleanup(t *testing.T) {
	linksBefore := rootLinks(t)
	var (
		names   []string
		claims  []string
		exiteds []chan struct{}
	)
	t.Run("network", func(t *testing.T) {
		n1, n2 := NewNetwork(t), NewNetwork(t)
		if n1.Subnet == n2.Subnet {
			t.Errorf("two live networks share %s", n1.Subnet)
		}
		hosts := []*Host{n1.AddHost(t, "a"), n1.AddHost(t, "b"), n2.AddHost(t, "a"), NewIsolatedHost(t, "offline")}
		names = append(names, n1.NS, n2.NS)
		claims = append(claims, n1.Subnet, n2.Subnet)
		for _, h := range hosts {
			names = append(names, h.NS)
			// Started and never stopped by the test: the cleanup must
			// kill it.
			cmd := h.Command(context.Background(), "sleep", "600")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			exiteds = append(exiteds, exited)
		}
		listed := netnsList(t)
		for _, ns := range names {
			if !slices.Contains(listed, ns) {
				t.Errorf("namespace %s not listed while live", ns)
			}
		}
	})
	if len(names) != 6 {
		t.Fatalf("subtest made %d namespaces, want 6", len(names))
	}

	listed := netnsList(t)
	for _, ns := range names {
		if slices.Contains(listed, ns) {
			t.Errorf("namespace %s still listed after cleanup", ns)
		}
	}
	if got := rootLinks(t); !slices.Equal(got, linksBefore) {
		t.Errorf("links in the machine's namespace changed:\nbefore %q\nafter  %q", linksBefore, got)
	}
	for i, exited := range exiteds {
		select {
		case <-exited:
		case <-time.After(netnsWait):
			t.Errorf("process %d in a host still runs after cleanup", i)
		}
	}
	for _, s := range claims {
		l, err := net.Listen("unix", "@kdr-testenv-net-"+s)
		if err != nil {
			t.Errorf("subnet %s still claimed after cleanup: %v", s, err)
			continue
		}
		l.Close()
	}
}

// startNetnsEtcd starts a one-member etcd in h serving clients on ip:2379
// with a random member name, and waits until h itself finds it healthy. It
// returns the name and a channel closed when the process has exited.
func startNetnsEtcd(t *testing.T, h *Host, ip string) (string, <-chan struct{}) {
	t.Helper()
	name := fmt.Sprintf("m-%x", rand.Uint64())
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	client := "http://" + net.JoinHostPort(ip, "2379")
	// Peers stay on the host's loopback: these clusters have one member.
	peer := "http://127.0.0.1:2380"
	ctx, cancel := context.WithCancel(context.Background())
	cmd := h.Command(ctx, Binary(t, "etcd"),
		"--name", name,
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", name+"="+peer,
		"--logger", "zap", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		cancel()
		logf.Close()
		t.Fatalf("start etcd in %s: %v", h.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(netnsWait):
			t.Errorf("etcd in %s did not exit after SIGKILL", h.Name)
		}
	})
	deadline := time.Now().Add(netnsWait)
	for etcdctlIn(h, client, "endpoint", "health") != nil {
		select {
		case <-exited:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("etcd in %s exited:\n%s", h.Name, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("etcd in %s not healthy after %s:\n%s", h.Name, netnsWait, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return name, exited
}

// etcdctlIn runs etcdctl in h against endpoint, bounded to a few seconds
// so that a partitioned endpoint fails quickly.
func etcdctlIn(h *Host, endpoint string, args ...string) error {
	bin, ok := lookBinary("etcdctl")
	if !ok {
		return fmt.Errorf("etcdctl not found: run `make tools`")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args = append([]string{"--endpoints", endpoint, "--dial-timeout", "2s", "--command-timeout", "3s"}, args...)
	if out, err := h.Command(ctx, bin, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("etcdctl %s in %s: %v: %s", strings.Join(args, " "), h.Name, err, out)
	}
	return nil
}

// memberList asks endpoint for its members through etcd's JSON gateway,
// from the test process itself.
func memberList(endpoint string) (string, error) {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Post(endpoint+"/v3/cluster/member/list", "application/json", strings.NewReader("{}"))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(body), err
}

// rootLinks lists the link names of the machine's namespace, sorted.
func rootLinks(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	return names
}

// rootRoutes is the machine's namespace's routing tables, IPv4 and IPv6.
func rootRoutes(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route: %v: %s", err, out)
	}
	return string(out)
}

// netnsList is the names `ip netns list` shows.
func netnsList(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// Lines read "name" or "name (id: 3)".
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}
