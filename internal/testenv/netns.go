package testenv

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// netnsCommandLimit bounds one `ip` call of the harness and one
	// Host.Run.
	netnsCommandLimit = time.Minute
	// netnsKillLimit bounds the wait for a namespace's processes to be
	// gone after SIGKILL.
	netnsKillLimit = 10 * time.Second
	// firstHostOctet is the last octet of the first host's address; later
	// hosts count up from it and no address is handed out twice.
	firstHostOctet = 11
)

// hostName is what AddHost accepts: the name becomes part of a namespace
// name and of an interface name, so it stays within what both allow.
var hostName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// Network is a layer-2 segment of test hosts: a bridge in a network
// namespace of its own, with each Host in another namespace plugged into
// it by a veth pair. Nothing is created in the machine's own namespace: no
// link, no address, no route, no firewall rule, so parallel test processes
// and the machine never see one another's networks.
//
// Its hosts take addresses from one /24 of 198.18.0.0/15, the range
// reserved for benchmarking networks (RFC 2544), which no real network
// routes.
type Network struct {
	// ID is the random part of every name the network creates.
	ID string
	// NS is the namespace that holds the bridge.
	NS string
	// Bridge is the bridge's interface name inside NS.
	Bridge string
	// Subnet is the network's /24, as 198.18.x.0/24.
	Subnet string

	prefix string // the first three octets, with the trailing dot
	claim  net.Listener
	// idClaim holds ID for the network's life: see claimID.
	idClaim net.Listener

	mu       sync.Mutex
	hosts    map[string]*Host
	next     int // last octet of the next host's address
	portSeq  int // numbers bridge ports, unique even across replaced hosts
	isClosed bool
}

// Host is one machine of a test: a network namespace with loopback and, on
// a Network, an eth0 on the network's bridge.
type Host struct {
	// Name is the host's name within its network, e.g. "cp1".
	Name string
	// IP is eth0's address; empty for an isolated host.
	IP string
	// NS is the network namespace's name, as `ip netns list` shows it.
	NS string

	net     *Network // nil for an isolated host
	port    string   // the bridge end of the veth pair, inside net.NS
	mu      sync.Mutex
	removed bool
}

// NewNetwork creates an empty Network whose namespaces, links and
// reservation go away when the test ends.
func NewNetwork(t testing.TB) *Network {
	t.Helper()
	requireNetAdmin(t)
	sweepStale(t)
	n := &Network{hosts: map[string]*Host{}, next: firstHostOctet}
	n.claimSubnet(t)
	n.ID, n.idClaim = claimID(t)
	n.NS = "kdr-" + n.ID
	// The bridge's name is unique on the machine even though no other
	// network shares its namespace: a name seen in a log, a `ip monitor`
	// or a leftover after a crash then points at one test network.
	n.Bridge = "kdrbr-" + n.ID
	addNetns(t, n.NS)
	t.Cleanup(func() { n.close(t) })
	ipMust(t, "-n", n.NS, "link", "set", "lo", "up")
	ipMust(t, "-n", n.NS, "link", "add", n.Bridge, "type", "bridge")
	ipMust(t, "-n", n.NS, "link", "set", n.Bridge, "up")
	return n
}

// claimSubnet picks a random /24 of 198.18.0.0/15 that no other Network of
// any process on this machine holds. Namespaces keep addresses private, so
// two networks on one /24 would still work; a /24 of its own makes an
// address in a test log name one network. The claim is a listening
// abstract unix socket named after the subnet: binding is atomic across
// processes, and the kernel releases it when the process dies, so a
// crashed test leaves no stale claim (a lock file would stay behind).
func (n *Network) claimSubnet(t testing.TB) {
	t.Helper()
	for _, i := range rand.Perm(512) {
		prefix := fmt.Sprintf("198.%d.%d.", 18+i/256, i%256)
		l, err := net.Listen("unix", "@kdr-testenv-net-"+prefix+"0/24")
		if err != nil {
			continue
		}
		n.prefix, n.Subnet, n.claim = prefix, prefix+"0/24", l
		return
	}
	t.Fatal("network: all 512 /24s of 198.18.0.0/15 are held by other test networks")
}

// AddHost creates host name on the network with the next unused address,
// from .11 upwards. A name may be used again after its host was removed:
// the new host is a blank machine with a new address, as when a failed
// control-plane node is replaced.
func (n *Network) AddHost(t testing.TB, name string) *Host {
	t.Helper()
	if !hostName.MatchString(name) {
		t.Fatalf("host name %q: want lower-case letters, digits and dashes, at most 31", name)
	}
	n.mu.Lock()
	if n.isClosed {
		n.mu.Unlock()
		t.Fatalf("add host %s: network %s is gone", name, n.NS)
	}
	if _, ok := n.hosts[name]; ok {
		n.mu.Unlock()
		t.Fatalf("add host %s: network %s has one already; Remove it first", name, n.NS)
	}
	if n.next > 254 {
		n.mu.Unlock()
		t.Fatalf("add host %s: network %s has handed out all its addresses", name, n.NS)
	}
	n.portSeq++
	h := &Host{
		Name: name,
		IP:   n.prefix + strconv.Itoa(n.next),
		NS:   n.NS + "-" + name,
		net:  n,
		// The host's name is in the port's for `ip link` readers; the
		// number keeps it unique when the name is cut to 15 bytes or a
		// replaced host's port is still being torn down.
		port: truncate(fmt.Sprintf("p%d-%s", n.portSeq, name), 15),
	}
	n.next++
	n.hosts[name] = h
	n.mu.Unlock()

	addNetns(t, h.NS)
	t.Cleanup(func() { h.remove(t) })
	ipMust(t, "-n", h.NS, "link", "set", "lo", "up")
	// Both ends are created where they live, so no link ever appears in
	// the machine's namespace, even for a moment.
	ipMust(t, "-n", n.NS, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.NS)
	ipMust(t, "-n", n.NS, "link", "set", h.port, "master", n.Bridge, "up")
	ipMust(t, "-n", h.NS, "addr", "add", h.IP+"/24", "dev", "eth0")
	ipMust(t, "-n", h.NS, "link", "set", "eth0", "up")
	return h
}

// Host returns the live host called name, or nil.
func (n *Network) Host(name string) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hosts[name]
}

// close removes what is left of the network: its hosts (normally each
// removed by its own cleanup already), the bridge's namespace and the
// subnet claim.
func (n *Network) close(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	n.isClosed = true
	var left []*Host
	for _, h := range n.hosts {
		left = append(left, h)
	}
	n.mu.Unlock()
	for _, h := range left {
		h.remove(t)
	}
	if err := deleteNetns(n.NS); err != nil {
		t.Errorf("network %s: %v", n.NS, err)
	}
	n.claim.Close()
	n.idClaim.Close()
}

// NewIsolatedHost creates a host with loopback only and no route out, as
// a machine restored from an offline disk with no network. Its IP is
// empty; a server in it listens on 127.0.0.1, whose ports are its own.
func NewIsolatedHost(t testing.TB, name string) *Host {
	t.Helper()
	requireNetAdmin(t)
	if !hostName.MatchString(name) {
		t.Fatalf("host name %q: want lower-case letters, digits and dashes, at most 31", name)
	}
	sweepStale(t)
	id, claim := claimID(t)
	h := &Host{Name: name, NS: "kdr-" + id + "-" + name}
	addNetns(t, h.NS)
	t.Cleanup(func() { h.remove(t); claim.Close() })
	ipMust(t, "-n", h.NS, "link", "set", "lo", "up")
	return h
}

// Command returns a command that runs in the host's network namespace
// with the test's environment and working directory; ctx kills it.
//
// It runs through `ip netns exec` rather than `nsenter --net`: besides
// the network namespace, ip gives the command a mount namespace whose
// /sys is remounted for the host's namespace, so /sys/class/net lists
// only lo and eth0, as on a real host, and any /etc/netns/<NS> files
// replace /etc's. The rest of the filesystem is the test's (the new mount
// namespace is a slave copy), so temp dirs work as usual; mounts that the
// command itself makes stay its own. ip execs the command in place, so
// the Cmd's process is the command itself and signals reach it.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
	// A test process that dies does not leave the command running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// A grandchild holding the output open does not keep Wait waiting.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Run runs a command in the host's namespace, bounded by a minute, and
// returns its output with surrounding space trimmed. A failure fails the
// test and shows the output.
func (h *Host) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), netnsCommandLimit)
	defer cancel()
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %s %s: %v\n%s", h.Name, name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Isolate cuts the host off the network, as a pulled cable at the switch:
// its bridge port goes down, eth0 loses carrier, and packets to and from
// it are lost (a peer's connect times out rather than being refused).
// The host keeps its address, and its servers keep running.
func (h *Host) Isolate(t testing.TB) {
	t.Helper()
	h.setPort(t, "down")
}

// Rejoin plugs an isolated host back in.
func (h *Host) Rejoin(t testing.TB) {
	t.Helper()
	h.setPort(t, "up")
}

func (h *Host) setPort(t testing.TB, state string) {
	t.Helper()
	if h.net == nil {
		t.Fatalf("%s: an isolated host has no network to leave or join", h.Name)
	}
	h.mu.Lock()
	removed := h.removed
	h.mu.Unlock()
	if removed {
		t.Fatalf("%s: host was removed", h.Name)
	}
	ipMust(t, "-n", h.net.NS, "link", "set", h.port, state)
}

// Remove kills every process in the host and deletes its namespace and
// link, as a machine that has failed for good. Its name can then be given
// to a new host. Removing twice is harmless.
func (h *Host) Remove(t testing.TB) {
	t.Helper()
	h.remove(t)
}

func (h *Host) remove(t testing.TB) {
	t.Helper()
	if err := h.teardown(); err != nil {
		t.Error(err)
	}
}

// teardown does the work of remove, gathering every failure so that one
// does not stop the rest of the cleanup.
func (h *Host) teardown() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.removed {
		return nil
	}
	h.removed = true
	var errs []string
	if err := killNetns(h.NS); err != nil {
		errs = append(errs, err.Error())
	}
	if h.net != nil {
		// Deleting one end deletes the pair now; left to the namespace's
		// deletion, the veth would go whenever the kernel gets to it.
		if out, err := ip("-n", h.net.NS, "link", "del", h.port); err != nil {
			errs = append(errs, fmt.Sprintf("delete port %s: %v: %s", h.port, err, out))
		}
	}
	if err := deleteNetns(h.NS); err != nil {
		errs = append(errs, err.Error())
	}
	if h.net != nil {
		h.net.mu.Lock()
		if h.net.hosts[h.Name] == h {
			delete(h.net.hosts, h.Name)
		}
		h.net.mu.Unlock()
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove host %s (%s): %s", h.Name, h.NS, strings.Join(errs, "; "))
	}
	return nil
}

// requireNetAdmin fails the test when namespaces cannot be made: like a
// missing tool, a missing privilege fails rather than skips, so a test
// never passes by testing nothing.
func requireNetAdmin(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("ip (iproute2) not found: network namespaces are made with it")
	}
}

// addNetns creates a named network namespace. `ip netns add` refuses a
// name that exists, so a clash fails here instead of sharing a namespace.
func addNetns(t testing.TB, ns string) {
	t.Helper()
	ipMust(t, "netns", "add", ns)
}

// killNetns kills every process in ns and waits until none is left, so
// that the namespace is really gone once deleted.
func killNetns(ns string) error {
	deadline := time.Now().Add(netnsKillLimit)
	for {
		out, err := ip("netns", "pids", ns)
		if err != nil {
			return fmt.Errorf("list processes in %s: %v: %s", ns, err, out)
		}
		pids := strings.Fields(out)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %s in %s still alive %s after SIGKILL", strings.Join(pids, " "), ns, netnsKillLimit)
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// deleteNetns kills what runs in ns and deletes it.
func deleteNetns(ns string) error {
	err := killNetns(ns)
	if out, derr := ip("netns", "del", ns); derr != nil {
		return fmt.Errorf("delete namespace %s: %v: %s", ns, derr, out)
	}
	return err
}

// ipMust runs ip and fails the test on error.
func ipMust(t testing.TB, args ...string) {
	t.Helper()
	if out, err := ip(args...); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// ip runs `ip args...`, bounded in time, and returns its combined output.
func ip(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), netnsCommandLimit)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	return string(out), err
}

// claimID picks a random ID that no live test process holds and holds it
// with a listening abstract unix socket, which the kernel releases when
// the process dies. Every namespace and cgroup a test makes carries its ID
// (kdr-<ID>..., kdr-node-<ID>-...), so one whose ID nobody holds was left
// by a killed test run: sweepStale removes it.
func claimID(t testing.TB) (string, net.Listener) {
	t.Helper()
	for range 100 {
		id := randomID()
		if l, err := net.Listen("unix", "@kdr-testenv-id-"+id); err == nil {
			return id, l
		}
	}
	t.Fatal("no free test network ID after 100 tries")
	return "", nil
}

// idHeld reports whether a live test process holds id.
func idHeld(id string) bool {
	l, err := net.Listen("unix", "@kdr-testenv-id-"+id)
	if err != nil {
		return true
	}
	l.Close()
	return false
}

var sweepOnce sync.Once

// sweepStale removes, once per test process, what killed test runs left:
// network namespaces (with their processes) and node cgroups (with
// theirs) whose IDs no live test process holds. A test that ends normally
// leaves nothing; a SIGKILLed one cannot clean up after itself.
func sweepStale(t testing.TB) {
	t.Helper()
	sweepOnce.Do(func() {
		if err := sweep(); err != nil {
			t.Logf("left by earlier test runs, not all removed: %v", err)
		}
	})
}

// sweep does sweepStale's work, every time it is called.
func sweep() error {
	var errs []string
	if cgroups, err := cgroupRootsNamed("kdr-node-"); err == nil {
		for _, name := range cgroups {
			id, _, _ := strings.Cut(strings.TrimPrefix(name, "kdr-node-"), "-")
			if idHeld(id) {
				continue
			}
			if err := killCgroupRoot(name); err != nil {
				errs = append(errs, err.Error())
			} else if err := removeCgroupRoot(name); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	out, err := ip("netns", "list")
	if err != nil {
		errs = append(errs, fmt.Sprintf("list namespaces: %v: %s", err, out))
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "kdr-") {
			continue
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(f[0], "kdr-"), "-")
		if len(id) != 6 || idHeld(id) {
			continue
		}
		if err := deleteNetns(f[0]); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// randomID is six hex digits: short enough that "kdrbr-" plus it fits an
// interface name, long enough that two live networks rarely share it (and
// `ip netns add` refuses the second if they do).
func randomID() string {
	return fmt.Sprintf("%06x", rand.Uint32()&0xffffff)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// DialContext connects from inside the host's network namespace, so that
// the test process itself can reach the host's servers (its address is on
// no link of the machine's namespace). Only the socket is made there: the
// dialling goroutine locks its thread, moves the thread into the
// namespace, creates and connects the socket, and moves back. A socket
// keeps the namespace it was made in, so the connection works from any
// goroutine afterwards. Use it as an http.Transport's DialContext.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		// The thread stays locked unless it is back in its own namespace:
		// the runtime then ends it with this goroutine, so no other
		// goroutine ever runs in the host's namespace by mistake.
		runtime.LockOSThread()
		c, back, err := dialIn(ctx, h.NS, network, addr)
		if back {
			runtime.UnlockOSThread()
		}
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

// dialIn dials from network namespace ns on the calling, locked thread and
// reports whether the thread is back in its own namespace.
func dialIn(ctx context.Context, ns, network, addr string) (c net.Conn, back bool, err error) {
	own, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, fmt.Errorf("dial %s in %s: %w", addr, ns, err)
	}
	defer own.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return nil, true, fmt.Errorf("dial %s in %s: %w", addr, ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("dial %s: enter %s: %w", addr, ns, err)
	}
	var d net.Dialer
	c, err = d.DialContext(ctx, network, addr)
	back = unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil
	if err != nil {
		return nil, back, fmt.Errorf("dial %s in %s: %w", addr, ns, err)
	}
	return c, back, nil
}
