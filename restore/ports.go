package restore

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
)

// ErrWrongHost means the node's address is not on this machine.
var ErrWrongHost = errors.New("this host is not the node")

// portFree fails when the URL's address is not on this host, or its port
// is taken.
func portFree(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", u.Host)
	if err != nil {
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			return fmt.Errorf("%w: no interface here has %s (run this on the node that has it)", ErrWrongHost, u.Hostname())
		}
		return fmt.Errorf("%s is in use: %w", u.Host, err)
	}
	return l.Close()
}
