package testenv

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// waitLimit bounds every wait on a MinIO process: startup, readiness, exit.
const waitLimit = 30 * time.Second

// MinIOOptions shape a test MinIO server.
type MinIOOptions struct {
	// AccessKey and SecretKey of the root user. Defaults: "kdr-test" and a
	// random secret.
	AccessKey string
	SecretKey string
	// Env adds KEY=VALUE settings to the server's environment.
	Env []string
	// TLS serves HTTPS with a certificate for 127.0.0.1 from a throwaway CA
	// (MinIO.PKI.CA).
	TLS bool
	// Host runs the server on a network host, listening on its address,
	// where the network's other hosts reach it; the test process reaches
	// it through Host.DialContext. Default: the test's own loopback.
	Host *Host
}

// MinIO is a real `minio server` process on loopback ports with its data in
// the test's temp directory.
type MinIO struct {
	t           testing.TB
	bin         string
	dataDir     string
	logPath     string
	apiPort     int
	consolePort int
	host        *Host
	accessKey   string
	secretKey   string
	env         []string
	certsDir    string

	// PKI holds the CA and server certificate when the server serves TLS.
	PKI *PKI

	cmd    *exec.Cmd
	exited chan struct{}
	client *minio.Client
}

// StartMinIO starts a MinIO server, waits until it is ready, and stops it
// when the test ends.
func StartMinIO(t testing.TB, o MinIOOptions) *MinIO {
	t.Helper()
	dir := t.TempDir()
	m := &MinIO{
		t:         t,
		bin:       Binary(t, "minio"),
		dataDir:   filepath.Join(dir, "data"),
		logPath:   filepath.Join(dir, "minio.log"),
		accessKey: o.AccessKey,
		secretKey: o.SecretKey,
		env:       o.Env,
		host:      o.Host,
	}
	if m.accessKey == "" {
		m.accessKey = "kdr-test"
	}
	if m.secretKey == "" {
		b := make([]byte, 16)
		rand.Read(b)
		m.secretKey = hex.EncodeToString(b)
	}
	if err := os.MkdirAll(m.dataDir, 0o755); err != nil {
		t.Fatalf("minio data dir: %v", err)
	}
	if o.TLS {
		m.PKI = NewPKI(t, filepath.Join(dir, "pki"))
		m.certsDir = filepath.Join(dir, "certs")
		if err := os.MkdirAll(m.certsDir, 0o700); err != nil {
			t.Fatal(err)
		}
		for src, dst := range map[string]string{m.PKI.ServerCert: "public.crt", m.PKI.ServerKey: "private.key"} {
			b, err := os.ReadFile(src)
			if err == nil {
				err = os.WriteFile(filepath.Join(m.certsDir, dst), b, 0o600)
			}
			if err != nil {
				t.Fatalf("minio certificates: %v", err)
			}
		}
	}
	t.Cleanup(m.Stop)
	// A port found free can be taken by another process before MinIO binds
	// it; pick new ports then.
	var err error
	for range 3 {
		m.apiPort, m.consolePort = FreePort(t), FreePort(t)
		if m.host != nil {
			// The host's ports are its own.
			m.apiPort, m.consolePort = 9000, 9001
		}
		if err = m.start(); err == nil {
			return m
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("start minio: %v", err)
	return nil
}

// Start starts the server again on the same ports and data, after Stop.
func (m *MinIO) Start() {
	m.t.Helper()
	if m.cmd != nil {
		return
	}
	if err := m.start(); err != nil {
		m.t.Fatalf("restart minio: %v", err)
	}
}

func (m *MinIO) start() error {
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "--- %s starting minio on %s\n", time.Now().Format(time.RFC3339Nano), m.Endpoint())
	args := []string{"server",
		"--address", m.Endpoint(),
		"--console-address", net.JoinHostPort(m.ip(), strconv.Itoa(m.consolePort))}
	if m.certsDir != "" {
		args = append(args, "--certs-dir", m.certsDir)
	}
	args = append(args, m.dataDir)
	cmd := exec.Command(m.bin, args...)
	if m.host != nil {
		cmd = m.host.Command(context.Background(), m.bin, args...)
	}
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.accessKey,
		"MINIO_ROOT_PASSWORD="+m.secretKey,
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=1",
	)
	cmd.Env = append(cmd.Env, m.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The server dies with the test binary even when cleanup never runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	m.cmd, m.exited = cmd, exited
	if err := m.waitReady(); err != nil {
		m.Stop()
		return fmt.Errorf("%w\n--- minio log (tail) ---\n%s", err, logTail(m.logPath))
	}
	return nil
}

// waitReady polls MinIO's readiness probe until it answers 200, the process
// exits, or waitLimit passes.
func (m *MinIO) waitReady() error {
	url := m.URL() + "/minio/health/ready"
	tr, err := m.transport()
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: tr}
	deadline := time.Now().Add(waitLimit)
	var last error
	for time.Now().Before(deadline) {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("readiness probe: %s", resp.Status)
		}
		last = err
		select {
		case <-m.exited:
			return errors.New("minio exited during startup")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("minio not ready after %s: %v", waitLimit, last)
}

// Stop kills the server, as a crash or power loss would, and waits for it
// to exit. Stopping a stopped server does nothing.
func (m *MinIO) Stop() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	select {
	case <-m.exited:
	case <-time.After(waitLimit):
		m.t.Errorf("minio (pid %d) did not exit %s after SIGKILL", m.cmd.Process.Pid, waitLimit)
	}
	m.cmd = nil
}

// Endpoint is the S3 API address, host:port.
func (m *MinIO) Endpoint() string { return net.JoinHostPort(m.ip(), strconv.Itoa(m.apiPort)) }

func (m *MinIO) ip() string {
	if m.host != nil {
		return m.host.IP
	}
	return "127.0.0.1"
}

// URL is the S3 API address with its scheme.
func (m *MinIO) URL() string {
	if m.PKI != nil {
		return "https://" + m.Endpoint()
	}
	return "http://" + m.Endpoint()
}

// transport trusts the test CA when the server serves TLS.
func (m *MinIO) transport() (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if m.host != nil {
		tr.DialContext = m.host.DialContext
	}
	if m.PKI == nil {
		return tr, nil
	}
	pem, err := os.ReadFile(m.PKI.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", m.PKI.CA)
	}
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr, nil
}

// AccessKey is the root user's access key.
func (m *MinIO) AccessKey() string { return m.accessKey }

// SecretKey is the root user's secret key.
func (m *MinIO) SecretKey() string { return m.secretKey }

// LogPath is the file that holds the server's output.
func (m *MinIO) LogPath() string { return m.logPath }

// Client is a root client for tests to set up and inspect the server.
func (m *MinIO) Client() *minio.Client {
	m.t.Helper()
	if m.client == nil {
		tr, err := m.transport()
		if err != nil {
			m.t.Fatalf("minio client: %v", err)
		}
		c, err := minio.New(m.Endpoint(), &minio.Options{
			Creds:     credentials.NewStaticV4(m.accessKey, m.secretKey, ""),
			Secure:    m.PKI != nil,
			Transport: tr,
		})
		if err != nil {
			m.t.Fatalf("minio client: %v", err)
		}
		m.client = c
	}
	return m.client
}

// CreateBucket makes a bucket, with Object Lock (and so versioning) when
// objectLock is set.
func (m *MinIO) CreateBucket(t testing.TB, name string, objectLock bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := m.Client().MakeBucket(ctx, name, minio.MakeBucketOptions{ObjectLocking: objectLock}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
}

// logTail returns the end of a log file for failure messages.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
