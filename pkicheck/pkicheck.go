package pkicheck

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"
)

// Grade is how a finding came out.
type Grade string

const (
	Pass Grade = "pass"
	// Warn: usable now, but not for long (an expiry within WarnWithin), or
	// not provable offline (a credential the backup does not hold).
	Warn Grade = "warn"
	// Fail: a control plane restored with this file would not work.
	Fail Grade = "fail"
)

// What a Check proves, its ID.
const (
	// IDFile: the file is there, readable and parses.
	IDFile = "file"
	// IDCertChain: the certificate is signed by a CA of the tree; a CA is
	// self-signed or signed by another CA of the tree.
	IDCertChain = "cert-chain"
	// IDKeyMatch: the private key belongs to its certificate (or public
	// key).
	IDKeyMatch = "key-match"
	// IDCertExpiry: the certificate is valid now and not about to expire.
	IDCertExpiry = "cert-expiry"
	// IDKubeconfig: the kubeconfig trusts the cluster CA and carries a
	// client certificate it signed, with the matching key; it names no
	// exec plugin, auth provider or token file, and no file outside the
	// Kubernetes directory (but kubelet.conf's rotated client certificate).
	IDKubeconfig = "kubeconfig"
)

// Check is one finding.
type Check struct {
	ID string `json:"id"`
	// Subject is the file as a host path (under the root, with a leading
	// slash), such as /etc/kubernetes/pki/apiserver.crt.
	Subject string `json:"subject"`
	Grade   Grade  `json:"grade"`
	// Reason is one line with the evidence: the issuer, the expiry date
	// and days left, the parser's message.
	Reason string `json:"reason"`
}

// Options say where the tree is and how near an expiry may come.
type Options struct {
	// Root is the sandbox root every path is resolved under. It has no
	// default: a drill that forgot it must not check the host's own PKI.
	// "/" checks this host.
	Root string
	// KubernetesDir is kubeadm's directory as the host sees it (default
	// /etc/kubernetes).
	KubernetesDir string
	// Required are the files the tree cannot do without, each with why.
	// Default kubeadm's (KubeadmRequired): a topology with another layout,
	// external etcd under systemd with its PKI in /etc/ssl/etcd/ssl, names
	// its own, as kubeadm's would fail it for files it never had.
	Required []Required
	// PKIDirs are the directories, as host paths, walked for certificates
	// (*.crt, *.pem) and private keys (*.key, *-key.pem). Default
	// KubernetesDir/pki.
	PKIDirs []string
	// WarnWithin makes an expiry closer than this a warning (default 30
	// days).
	WarnWithin time.Duration
	// Now is the time expiry is judged at (default time.Now()).
	Now time.Time
}

const (
	defaultKubernetesDir = "/etc/kubernetes"
	defaultWarnWithin    = 30 * 24 * time.Hour
)

// Required is one file a tree cannot do without.
type Required struct {
	// Path is the host path (absolute, slash-separated).
	Path string `json:"path"`
	// Why says what is lost without it, for the finding.
	Why string `json:"why"`
}

// KubeadmRequired are the files a kubeadm control plane cannot do without,
// below its Kubernetes directory (a host path).
func KubeadmRequired(kubernetesDir string) []Required {
	dir := path.Clean("/" + filepath.ToSlash(kubernetesDir))
	out := make([]Required, len(kubeadmRequired))
	for i, r := range kubeadmRequired {
		out[i] = Required{Path: path.Join(dir, r.path), Why: r.why}
	}
	return out
}

// kubeadmRequired are kubeadm's required files relative to its Kubernetes
// directory, each with why.
var kubeadmRequired = []struct{ path, why string }{
	{"pki/ca.crt", "the cluster CA that every component and kubeconfig trusts"},
	{"pki/ca.key", "the cluster CA key, needed to issue a node's certificates again and to join nodes"},
	{"pki/sa.key", "signs service account tokens; a new one invalidates every token in the cluster"},
	{"pki/sa.pub", "the API server verifies service account tokens with it"},
	{"pki/etcd/ca.crt", "the etcd CA that etcd members and the API server trust each other through"},
	{"pki/etcd/ca.key", "the etcd CA key, needed to issue etcd's server and peer certificates for a node again"},
	{"pki/front-proxy-ca.crt", "the API server trusts aggregated API requests (metrics-server) through it"},
	{"admin.conf", "the administrator's way into the restored cluster"},
}

// Run checks the kubeadm tree below o.Root and returns its findings sorted
// by Subject, then ID. The error is only for a root that cannot be read at
// all (or a cancelled ctx); a damaged tree is findings.
func Run(ctx context.Context, o Options) ([]Check, error) {
	if o.Root == "" {
		return nil, errors.New(`pkicheck: no root given ("/" checks this host)`)
	}
	if _, err := os.ReadDir(o.Root); err != nil {
		return nil, fmt.Errorf("pkicheck: read root: %w", err)
	}
	c := newChecker(o)
	c.required()
	certs, keys := c.walkPKI(ctx)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pkicheck: %w", err)
	}
	c.readCerts(certs)
	for _, p := range certs {
		if cf := c.certs[p]; cf.cert != nil {
			c.chain(cf)
			c.expiry(p, cf.cert)
		}
	}
	for _, p := range keys {
		c.keyMatch(p)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pkicheck: %w", err)
	}
	for _, p := range c.kubeconfigs() {
		data, err := c.box.readFile(p)
		if err != nil {
			c.add(p, IDKubeconfig, Fail, "cannot read: "+oneLine(err))
			continue
		}
		c.kubeconfig(p, data)
	}
	slices.SortFunc(c.out, func(a, b Check) int {
		return cmp.Or(strings.Compare(a.Subject, b.Subject), strings.Compare(a.ID, b.ID))
	})
	return c.out, nil
}

// Worst is the worst grade among checks, Pass for none. A grade Run never
// gives (from a decoded report) counts as Fail: it proves nothing.
func Worst(checks []Check) Grade {
	worst := Pass
	for _, c := range checks {
		if c.Grade.rank() > worst.rank() {
			worst = c.Grade
		}
	}
	if worst.rank() > Fail.rank() {
		return Fail
	}
	return worst
}

func (g Grade) rank() int {
	switch g {
	case Pass:
		return 0
	case Warn:
		return 1
	case Fail:
		return 2
	}
	return 3
}

// newChecker fills in the defaults of o.
func newChecker(o Options) *checker {
	if o.KubernetesDir == "" {
		o.KubernetesDir = defaultKubernetesDir
	}
	if o.WarnWithin == 0 {
		o.WarnWithin = defaultWarnWithin
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	dir := path.Clean("/" + filepath.ToSlash(o.KubernetesDir))
	if o.Required == nil {
		o.Required = KubeadmRequired(dir)
	}
	pki := path.Join(dir, "pki")
	if o.PKIDirs == nil {
		o.PKIDirs = []string{pki}
	}
	return &checker{o: o, box: sandbox{root: o.Root}, dir: dir, pki: pki, certs: map[string]*certFile{}}
}

// certFile is a certificate file of the tree; cert is nil when it does
// not parse.
type certFile struct {
	path string
	cert *x509.Certificate
}

type checker struct {
	o   Options
	box sandbox
	// dir and pki are the Kubernetes and its pki directory as host paths:
	// the kubeconfigs there trust pki/ca.crt.
	dir, pki string
	certs    map[string]*certFile
	// cas are the parsed CA certificates, in path order so that the CA a
	// finding names does not change between runs.
	cas []*certFile
	out []Check
}

func (c *checker) add(subject, id string, g Grade, reason string) {
	c.out = append(c.out, Check{ID: id, Subject: subject, Grade: g, Reason: reason})
}

func (c *checker) required() {
	for _, r := range c.o.Required {
		p := path.Clean("/" + r.Path)
		if _, _, err := c.box.resolve(p); errors.Is(err, fs.ErrNotExist) {
			c.add(p, IDFile, Fail, "missing: "+r.Why)
		}
	}
}

// walkPKI lists the certificates and keys below the PKI directories as
// host paths, in order, each once. A missing directory is left to the
// required files.
func (c *checker) walkPKI(ctx context.Context) (certs, keys []string) {
	seen := map[string]bool{}
	for _, dir := range c.o.PKIDirs {
		dc, dk := c.walkDir(ctx, path.Clean("/"+dir))
		for _, p := range dc {
			if !seen[p] {
				seen[p] = true
				certs = append(certs, p)
			}
		}
		for _, p := range dk {
			if !seen[p] {
				seen[p] = true
				keys = append(keys, p)
			}
		}
	}
	slices.Sort(certs)
	slices.Sort(keys)
	return certs, keys
}

// kind tells a certificate from a private key by name: kubeadm's .crt
// and .key, and cfssl's (kubespray's etcd) name.pem and name-key.pem.
func kind(p string) (cert, key bool) {
	switch {
	case path.Ext(p) == ".key", strings.HasSuffix(p, "-key.pem"):
		return false, true
	case path.Ext(p) == ".crt", path.Ext(p) == ".pem":
		return true, false
	}
	return false, false
}

// certFor is the certificate file beside key file p: name.key's name.crt,
// name-key.pem's name.pem.
func certFor(p string) string {
	if base, ok := strings.CutSuffix(p, "-key.pem"); ok {
		return base + ".pem"
	}
	return strings.TrimSuffix(p, ".key") + ".crt"
}

// walkDir lists the certificates and keys below one directory.
func (c *checker) walkDir(ctx context.Context, dir string) (certs, keys []string) {
	real, _, err := c.box.resolve(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		c.add(dir, IDFile, Fail, "cannot read: "+oneLine(err))
		return nil, nil
	}
	// The walk stops only for ctx, which Run reports; every other error is
	// a finding and the walk goes on.
	_ = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		host := path.Join(dir, filepath.ToSlash(strings.TrimPrefix(p, real)))
		if err != nil {
			c.add(host, IDFile, Fail, "cannot read: "+oneLine(cause(err)))
			return nil
		}
		if d.IsDir() {
			return nil
		}
		switch cert, key := kind(host); {
		case cert:
			certs = append(certs, host)
		case key:
			keys = append(keys, host)
		}
		return nil
	})
	return certs, keys
}

func (c *checker) readCerts(paths []string) {
	for _, p := range paths {
		cf := &certFile{path: p}
		c.certs[p] = cf
		data, err := c.box.readFile(p)
		if err != nil {
			c.add(p, IDFile, Fail, "cannot read: "+oneLine(err))
			continue
		}
		if cf.cert, err = ParseCert(data); err != nil {
			c.add(p, IDFile, Fail, "does not parse: "+oneLine(err))
			continue
		}
		if cf.cert.IsCA {
			c.cas = append(c.cas, cf)
		}
	}
}

// chain finds the CA of the tree that signed a certificate. Each CA is
// checked the same way, so a certificate that passes reaches a self-signed
// root of the tree through CAs that pass too.
func (c *checker) chain(cf *certFile) {
	cert := cf.cert
	if cert.IsCA && cert.CheckSignatureFrom(cert) == nil {
		c.add(cf.path, IDCertChain, Pass, "self-signed CA "+cert.Subject.String())
		return
	}
	if ca := c.issuer(cert, cf.path); ca != nil {
		c.add(cf.path, IDCertChain, Pass, fmt.Sprintf("signed by %s (%s)", ca.path, ca.cert.Subject))
		return
	}
	c.add(cf.path, IDCertChain, Fail, fmt.Sprintf("signed by none of the %d CAs in the tree; it names issuer %s", len(c.cas), cert.Issuer))
}

// issuer is the first CA of the tree, other than the certificate's own
// file, whose key signed cert; nil for none.
func (c *checker) issuer(cert *x509.Certificate, self string) *certFile {
	for _, ca := range c.cas {
		if ca.path != self && cert.CheckSignatureFrom(ca.cert) == nil {
			return ca
		}
	}
	return nil
}

// expiry grades a certificate's validity at o.Now.
func (c *checker) expiry(subject string, cert *x509.Certificate) {
	const day = 24 * time.Hour
	at := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }
	left := cert.NotAfter.Sub(c.o.Now)
	switch {
	case left <= 0:
		c.add(subject, IDCertExpiry, Fail, fmt.Sprintf("expired %s, %d days ago", at(cert.NotAfter), int(-left/day)))
	case c.o.Now.Before(cert.NotBefore):
		c.add(subject, IDCertExpiry, Fail, fmt.Sprintf("not valid before %s; this clock or the issuer's is wrong", at(cert.NotBefore)))
	case left < c.o.WarnWithin:
		c.add(subject, IDCertExpiry, Warn, fmt.Sprintf("expires %s, %d days left (warning under %d)", at(cert.NotAfter), int(left/day), int(c.o.WarnWithin/day)))
	default:
		c.add(subject, IDCertExpiry, Pass, fmt.Sprintf("expires %s, %d days left", at(cert.NotAfter), int(left/day)))
	}
}

// keyMatch proves a private key belongs to the certificate beside it
// (name.crt for name.key, name.pem for name-key.pem), or else to the
// public key beside it (.pub: sa.key and sa.pub). A key with neither only
// has to parse.
func (c *checker) keyMatch(p string) {
	data, err := c.box.readFile(p)
	if err != nil {
		c.add(p, IDFile, Fail, "cannot read: "+oneLine(err))
		return
	}
	key, err := ParseKey(data)
	if err != nil {
		c.add(p, IDFile, Fail, "does not parse: "+oneLine(err))
		return
	}
	if cf, ok := c.certs[certFor(p)]; ok {
		switch {
		case cf.cert == nil:
			c.add(p, IDKeyMatch, Fail, fmt.Sprintf("cannot be matched against %s, which did not load", cf.path))
		case !SamePublicKey(key.Public(), cf.cert.PublicKey):
			c.add(p, IDKeyMatch, Fail, fmt.Sprintf("does not match %s (%s): the certificate holds another public key", cf.path, cf.cert.Subject))
		default:
			c.add(p, IDKeyMatch, Pass, fmt.Sprintf("matches %s", cf.path))
		}
		return
	}
	pubPath := strings.TrimSuffix(p, ".key") + ".pub"
	pubData, err := c.box.readFile(pubPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.add(p, IDFile, Pass, "parses; no certificate or public key beside it to match")
		return
	case err != nil:
		c.add(p, IDKeyMatch, Fail, fmt.Sprintf("cannot read %s: %s", pubPath, oneLine(err)))
		return
	}
	pub, err := parsePublicKey(pubData)
	switch {
	case err != nil:
		c.add(p, IDKeyMatch, Fail, fmt.Sprintf("cannot be matched: %s does not parse: %s", pubPath, oneLine(err)))
	case !SamePublicKey(key.Public(), pub):
		c.add(p, IDKeyMatch, Fail, fmt.Sprintf("does not match %s: it holds another public key", pubPath))
	default:
		c.add(p, IDKeyMatch, Pass, fmt.Sprintf("matches %s", pubPath))
	}
}

// kubeconfigs lists the *.conf files directly in the Kubernetes directory
// as host paths, in order.
func (c *checker) kubeconfigs() []string {
	real, _, err := c.box.resolve(c.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var entries []fs.DirEntry
	if err == nil {
		entries, err = os.ReadDir(real)
	}
	if err != nil {
		c.add(c.dir, IDFile, Fail, "cannot read: "+oneLine(cause(err)))
		return nil
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && path.Ext(e.Name()) == ".conf" {
			out = append(out, path.Join(c.dir, e.Name()))
		}
	}
	return out
}

// oneLine keeps a message to one printable line: it goes into a report,
// and a parser may quote a damaged file's bytes.
func oneLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, s)
}
