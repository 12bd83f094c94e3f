package drill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// privateNet is a network namespace of the drill's own with loopback
// alone, up. A restored cluster names endpoints of the live one: webhook
// URLs, KMS plugin sockets, an aggregated API's service. An API server
// started on it in the host's network could call them, and a drill must
// never write to, or be answered by, the cluster it proves restorable.
// Inside, 127.0.0.1 is a loopback of its own with nothing on it but what
// the drill puts there: etcd, through forward.
//
// The drill reaches into it without helper binaries (unshare, ip) and
// without a second process: a goroutine locks its OS thread and moves
// that thread into the namespace (setns), so that a socket it opens is
// the namespace's; the socket stays the namespace's whichever thread uses
// it later. Such a thread is never given back to the Go scheduler: a
// goroutine that ends while still locked ends its thread, so no other
// goroutine of kdr ever runs in the namespace by chance.
type privateNet struct {
	// ns holds the namespace open; it is gone once this closes and its
	// last socket and process are.
	ns *os.File
}

// newPrivateNet makes the namespace. It needs CAP_SYS_ADMIN (root).
func newPrivateNet() (*privateNet, error) {
	var ns *os.File
	err := onThread(nil, func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			return err
		}
		if err := loopbackUp(); err != nil {
			f.Close()
			return err
		}
		ns = f
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("private network namespace (a drill's kube-apiserver needs root): %w", err)
	}
	return &privateNet{ns: ns}, nil
}

// Close lets the namespace go once nothing else holds it.
func (n *privateNet) Close() error { return n.ns.Close() }

// onThread runs fn on an OS thread of its own, moved into ns first when
// ns is set, and ends that thread after.
func onThread(ns *os.File, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread ends with this goroutine, as it
		// is no longer in kdr's namespace.
		if ns != nil {
			if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
				errc <- fmt.Errorf("setns: %w", err)
				return
			}
		}
		errc <- fn()
	}()
	return <-errc
}

// loopbackUp brings up the calling thread's loopback interface, which a
// new namespace has down (and without 127.0.0.1 until it is up).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// DialContext connects from inside the namespace: the drill's client of
// the API server it started there.
func (n *privateNet) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := onThread(n.ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens inside the namespace.
func (n *privateNet) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := onThread(n.ns, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// Start starts cmd inside the namespace. The thread that forks it lives
// until the process ends, as Pdeathsig is the parent thread's death, not
// the process's. exited is closed once the process has ended and been
// waited for.
func (n *privateNet) Start(cmd *exec.Cmd) (exited <-chan struct{}, err error) {
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread, as in onThread.
		if err := unix.Setns(int(n.ns.Fd()), unix.CLONE_NEWNET); err != nil {
			started <- fmt.Errorf("setns: %w", err)
			return
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}

// forward listens on a loopback port inside the namespace and passes each
// connection to target in the host's network: the one way out, to the
// restored etcd members, which run in this process on the host's
// loopback. It returns the address inside and stops when ctx ends.
func (n *privateNet) forward(ctx context.Context, target string) (string, error) {
	l, err := n.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	go func() {
		<-ctx.Done()
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				wg.Wait()
				return
			}
			wg.Go(func() {
				defer in.Close()
				var d net.Dialer
				out, err := d.DialContext(ctx, "tcp", target)
				if err != nil {
					return
				}
				defer out.Close()
				track(in, true)
				track(out, true)
				defer track(in, false)
				defer track(out, false)
				done := make(chan struct{}, 2)
				pipe := func(dst, src net.Conn) {
					if _, err := io.Copy(dst, src); err != nil && !errors.Is(err, net.ErrClosed) {
						dst.Close()
					}
					if tc, ok := dst.(*net.TCPConn); ok {
						tc.CloseWrite()
					}
					done <- struct{}{}
				}
				go pipe(out, in)
				go pipe(in, out)
				<-done
				<-done
			})
		}
	}()
	return l.Addr().String(), nil
}
