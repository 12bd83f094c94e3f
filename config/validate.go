package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/robfig/cron/v3"
	"time"
)

// nameRE is what a cluster or target name may be: it becomes part of
// object keys, directory names and metric labels.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]*$`)

const maxNameLen = 63

// reservedClusterName is the directory of the offline recovery kit at the
// root of every local target (kit.Dir), beside the clusters' directories.
const reservedClusterName = "kit"

// Validate checks a Config built in code as Parse checks a file, after
// ApplyDefaults. Problems are joined, one per line, without line numbers.
func (c *Config) Validate() error {
	d := &decoder{file: "config", lines: map[string]int{}}
	d.validate(c)
	return d.result()
}

func (d *decoder) validate(cfg *Config) {
	if len(cfg.Clusters) == 0 {
		d.errorf("clusters", "at least one cluster is required")
	}
	names := map[string]string{}
	for i := range cfg.Clusters {
		p := fmt.Sprintf("clusters[%d]", i)
		c := &cfg.Clusters[i]
		d.name(p, c.Name, names)
		if c.Name == reservedClusterName {
			d.errorf(p+".name", "%q is reserved: a local target keeps its offline recovery kit in %s/", c.Name, reservedClusterName)
		}
		d.etcd(p+".etcd", &c.Etcd)
		d.state(p+".state", c.State)
		d.inventory(p+".inventory", &c.Inventory)
	}
	d.encryption(&cfg.Encryption)
	d.signing(&cfg.Signing)
	if len(cfg.Targets) == 0 {
		d.errorf("targets", "at least one target is required (s3: or local:)")
	}
	names = map[string]string{}
	for i := range cfg.Targets {
		p := fmt.Sprintf("targets[%d]", i)
		t := &cfg.Targets[i]
		d.name(p, t.Name, names)
		d.target(p, t)
	}
	d.schedule(&cfg.Schedule)
	d.retention(&cfg.Retention)
	d.agent(&cfg.Agent)
	if w, k := cfg.Agent.Capture.Window, cfg.Retention.KeepLog; k > 0 && w > k {
		d.errorf("agent.capture.window", "promises %s, longer than retention.keepLog (%s) keeps the log", w, k)
	}
	if t := cfg.Drill.Target; t != "" && !slices.ContainsFunc(cfg.Targets, func(x Target) bool { return x.Name == t }) {
		d.errorf("drill.target", "no target %q in targets", t)
	}
}

// name checks a cluster or target name and that it is unique among seen.
func (d *decoder) name(p, name string, seen map[string]string) {
	switch {
	case name == "":
		d.errorf(p+".name", "a name is required")
	case len(name) > maxNameLen || !nameRE.MatchString(name):
		d.errorf(p+".name", "%q is not a usable name (lowercase letters, digits, '-' and '.', starting with a letter or digit, at most %d)", name, maxNameLen)
	case seen[name] != "":
		d.errorf(p+".name", "%q is already the name of %s", name, seen[name])
	default:
		seen[name] = p
	}
}

func (d *decoder) etcd(p string, e *Etcd) {
	if len(e.Endpoints) == 0 {
		d.errorf(p+".endpoints", "at least one endpoint is required (https://host:2379)")
	}
	needsTLS := false
	for i, ep := range e.Endpoints {
		ep := strings.TrimSpace(ep)
		ip := fmt.Sprintf("%s.endpoints[%d]", p, i)
		// Refused before it is parsed and never echoed: what stands before
		// an "@" is a user and password, also where the rest is no URL and
		// would be quoted below.
		if strings.Contains(ep, "@") {
			d.errorf(ip, "credentials do not belong in the URL: use username and password or passwordFile")
			continue
		}
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			d.errorf(ip, "%q is not a URL (want https://host:port)", ep)
			continue
		}
		if u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			d.errorf(ip, "%q is not host and port (want %s://host:port)", ep, u.Scheme)
			continue
		}
		if port, err := strconv.Atoi(u.Port()); err != nil || port < 1 || port > 65535 {
			d.errorf(ip, "%q has no valid port", ep)
			continue
		}
		switch {
		case u.Scheme == "https":
			needsTLS = true
		case !e.Insecure:
			d.errorf(ip, "%q is plain http: set insecure: true to allow it, or use https with client certificates", ep)
		}
	}
	if needsTLS && !e.Insecure {
		switch {
		case e.TLS == nil:
			d.errorf(p+".tls", "https endpoints need tls: {ca, cert, key} (or insecure: true to skip client certificates)")
		default:
			for _, f := range []struct{ key, v string }{{"ca", e.TLS.CA}, {"cert", e.TLS.Cert}, {"key", e.TLS.Key}} {
				if f.v == "" {
					d.errorf(p+".tls."+f.key, "required for https endpoints (or insecure: true)")
				}
			}
		}
	}
	if e.TLS != nil && (e.TLS.Cert == "") != (e.TLS.Key == "") {
		d.errorf(p+".tls", "cert and key go together")
	}
	switch e.Prefer {
	case "follower", "leader", "any":
	default:
		d.errorf(p+".prefer", "%q is not follower, leader or any", e.Prefer)
	}
	if e.DialTimeout < 0 {
		d.errorf(p+".dialTimeout", "must not be negative")
	}
	if e.Password != "" && e.Username == "" {
		d.errorf(p+".username", "a password is set but no username")
	}
}

func (d *decoder) state(p string, sets []FileSet) {
	seen := map[string]string{}
	for i, fs := range sets {
		sp := fmt.Sprintf("%s[%d]", p, i)
		switch {
		case fs.Name == "":
			d.errorf(sp+".name", "a name is required")
		case !nameRE.MatchString(fs.Name):
			d.errorf(sp+".name", "%q is not a usable name (lowercase letters, digits, '-' and '.')", fs.Name)
		case seen[fs.Name] != "":
			d.errorf(sp+".name", "%q is already the name of %s", fs.Name, seen[fs.Name])
		default:
			seen[fs.Name] = sp
		}
		if len(fs.Paths) == 0 {
			d.errorf(sp+".paths", "at least one path is required")
		}
		for j, path := range fs.Paths {
			pp := fmt.Sprintf("%s.paths[%d]", sp, j)
			if !filepath.IsAbs(path) {
				d.errorf(pp, "%q is not an absolute path", path)
			} else if _, err := filepath.Match(path, ""); err != nil {
				d.errorf(pp, "%q is not a valid glob: %v", path, err)
			}
		}
	}
}

func (d *decoder) inventory(p string, inv *Inventory) {
	switch {
	case strings.Contains(inv.APIEndpoint, "@"):
		// Not echoed: the inventory goes into every manifest in plain text,
		// so credentials in the URL would be stored with every backup.
		d.errorf(p+".apiEndpoint", "credentials do not belong in the URL: it is stored in plain text with every backup")
	case inv.APIEndpoint != "":
		if u, err := url.Parse(inv.APIEndpoint); err != nil || u.Scheme != "https" || u.Host == "" {
			d.errorf(p+".apiEndpoint", "%q is not a URL (want https://host:port)", inv.APIEndpoint)
		}
	}
	if inv.VIP != "" {
		if _, err := netip.ParseAddr(inv.VIP); err != nil {
			d.errorf(p+".vip", "%q is not an IP address", inv.VIP)
		}
	}
	hosts := map[string]string{}
	for i, h := range inv.Hosts {
		hp := fmt.Sprintf("%s.hosts[%d]", p, i)
		switch {
		case h.Name == "":
			d.errorf(hp+".name", "a name is required")
		case hosts[h.Name] != "":
			d.errorf(hp+".name", "%q is already the name of %s", h.Name, hosts[h.Name])
		default:
			hosts[h.Name] = hp
		}
		if _, err := netip.ParseAddr(h.IP); err != nil {
			d.errorf(hp+".ip", "%q is not an IP address", h.IP)
		}
	}
	for i, r := range inv.DNS {
		rp := fmt.Sprintf("%s.dns[%d]", p, i)
		if r.Name == "" {
			d.errorf(rp+".name", "a name is required")
		}
		switch r.Type {
		case "A", "AAAA":
			a, err := netip.ParseAddr(r.Value)
			if err != nil || (r.Type == "A") != a.Is4() {
				d.errorf(rp+".value", "%q is not an IPv%s address for an %s record", r.Value, map[string]string{"A": "4", "AAAA": "6"}[r.Type], r.Type)
			}
		case "CNAME", "SRV", "TXT", "PTR", "NS", "MX":
			if r.Value == "" {
				d.errorf(rp+".value", "a value is required")
			}
		default:
			d.errorf(rp+".type", "%q is not a record type kdr knows (A, AAAA, CNAME, SRV, TXT, PTR, NS, MX)", r.Type)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(inv.Subnets)) {
		if v := inv.Subnets[k]; !validPrefix(v) {
			d.errorf(p+".subnets."+k, "%q is not a CIDR prefix (like 10.244.0.0/16)", v)
		}
	}
	for i, c := range inv.Contacts {
		if c.Name == "" {
			d.errorf(fmt.Sprintf("%s.contacts[%d].name", p, i), "a name is required")
		}
	}
}

// encryption checks recipients cheaply, by form: the crypto package parses
// them for real. Private keys are refused without being repeated.
func (d *decoder) encryption(e *Encryption) {
	if len(e.Recipients) == 0 && len(e.RecipientsFiles) == 0 {
		d.errorf("encryption", "at least one recipient is required (recipients: [age1...] or recipientsFiles); `kdr keys generate` makes a key pair")
	}
	for i, r := range e.Recipients {
		p := fmt.Sprintf("encryption.recipients[%d]", i)
		r = strings.TrimSpace(r)
		upper := strings.ToUpper(r)
		switch {
		case strings.HasPrefix(upper, "AGE-SECRET-KEY-") || strings.HasPrefix(upper, "AGE-PLUGIN-") || strings.Contains(upper, "PRIVATE KEY"):
			d.errorf(p, "this is a private key; configure the public key (age1... or the ssh-ed25519/ssh-rsa line of a .pub file) and keep the private key offline")
		case strings.HasPrefix(r, "age1") && len(r) > len("age1"),
			strings.HasPrefix(r, "ssh-ed25519 "),
			strings.HasPrefix(r, "ssh-rsa "):
		default:
			d.errorf(p, "not a public key: want an age key (age1...) or an SSH key (ssh-ed25519 ..., ssh-rsa ...)")
		}
	}
	for i, f := range e.RecipientsFiles {
		if strings.TrimSpace(f) == "" {
			d.errorf(fmt.Sprintf("encryption.recipientsFiles[%d]", i), "a file name is required")
		}
	}
}

// signing checks trusted keys by form (manifest parses them for real);
// a private key pasted in is refused without being repeated.
func (d *decoder) signing(s *Signing) {
	if len(s.TrustedKeys) == 0 && len(s.TrustedKeysFiles) == 0 {
		d.errorf("signing", "at least one trusted signing key is required (trustedKeys: [ssh-ed25519 ...] or trustedKeysFiles): kdr uses only sets they signed; `kdr keys generate --signing` makes a pair")
	}
	for i, k := range s.TrustedKeys {
		p := fmt.Sprintf("signing.trustedKeys[%d]", i)
		switch k = strings.TrimSpace(k); {
		case strings.Contains(strings.ToUpper(k), "PRIVATE KEY"):
			d.errorf(p, "this is a private key; configure the public key (the ssh-ed25519 line) and keep the private key in signing.keyFile")
		case !strings.HasPrefix(k, "ssh-ed25519 "):
			d.errorf(p, "not an Ed25519 public key: want \"ssh-ed25519 AAAA...\"")
		}
	}
	for i, f := range s.TrustedKeysFiles {
		if strings.TrimSpace(f) == "" {
			d.errorf(fmt.Sprintf("signing.trustedKeysFiles[%d]", i), "a file name is required")
		}
	}
}

func (d *decoder) target(p string, t *Target) {
	switch {
	case t.S3 == nil && t.Local == nil:
		d.errorf(p, "set one of s3: or local:")
		return
	case t.S3 != nil && t.Local != nil:
		d.errorf(p, "set one of s3: or local:, not both")
		return
	case t.Local != nil:
		switch lp := t.Local.Path; {
		case lp == "":
			d.errorf(p+".local.path", "a directory is required")
		case !filepath.IsAbs(lp):
			// Parse resolves a relative path against the file's directory;
			// a config built in code has no file to be relative to.
			d.errorf(p+".local.path", "%q is not an absolute path", lp)
		}
		return
	}
	s, sp := t.S3, p+".s3"
	switch {
	case s.Endpoint == "":
		d.errorf(sp+".endpoint", "required (host or host:port of the S3 service)")
	case strings.Contains(s.Endpoint, "@"):
		// Never echoed: before the "@" stand an access key and its secret.
		d.errorf(sp+".endpoint", "credentials do not belong in the endpoint: give host[:port], and the keys as accessKey and secretKey from ${VAR}, or accessKeyFile and secretKeyFile")
	case strings.Contains(s.Endpoint, "://"):
		d.errorf(sp+".endpoint", "%q: give host[:port] without a scheme (insecure: true selects http)", s.Endpoint)
	default:
		if !validHostPort(s.Endpoint) {
			d.errorf(sp+".endpoint", "%q is not host[:port]", s.Endpoint)
		}
	}
	if s.Bucket == "" {
		d.errorf(sp+".bucket", "required")
	}
	if (s.AccessKey == "") != (s.SecretKey == "") {
		d.errorf(sp, "accessKey and secretKey go together (from ${VAR} or the ...File keys)")
	}
	if s.PartSizeMiB < 5 || s.PartSizeMiB > 5120 {
		d.errorf(sp+".partSizeMiB", "%d is outside S3's part sizes (5 to 5120)", s.PartSizeMiB)
	}
	switch s.SSE {
	case "", "AES256":
		if s.SSEKMSKeyID != "" {
			d.errorf(sp+".sseKmsKeyId", "only with sse: aws:kms")
		}
	case "aws:kms":
	default:
		d.errorf(sp+".sse", "%q is not AES256 or aws:kms", s.SSE)
	}
	if ol := s.ObjectLock; ol != nil {
		if ol.Mode != "GOVERNANCE" && ol.Mode != "COMPLIANCE" {
			d.errorf(sp+".objectLock.mode", "%q is not GOVERNANCE or COMPLIANCE", ol.Mode)
		}
		if ol.Days <= 0 {
			d.errorf(sp+".objectLock.days", "must be at least 1")
		}
	}
}

func validPrefix(s string) bool {
	_, err := netip.ParsePrefix(s)
	return err == nil
}

// validHostPort accepts "host", "host:port" and "[v6]:port", as minio-go
// takes them.
func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = s, ""
	}
	if host == "" || strings.ContainsAny(host, "/ @?#:") && !isIPv6(host) {
		return false
	}
	if port == "" {
		return err != nil // "host:" is not valid
	}
	n, perr := strconv.Atoi(port)
	return perr == nil && n >= 1 && n <= 65535
}

func isIPv6(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6()
}

func (d *decoder) schedule(s *Schedule) {
	for _, c := range []struct{ key, spec string }{{"backup", s.Backup}, {"prune", s.Prune}, {"drill", s.Drill}} {
		if err := checkCron(c.spec); err != nil {
			d.errorf("schedule."+c.key, "%q is not a cron expression: %v", c.spec, err)
		}
	}
	if s.Jitter < 0 {
		d.errorf("schedule.jitter", "must not be negative")
	}
}

// checkCron parses a standard 5-field expression or a descriptor (@hourly,
// @every 2h). The parser panics on a "TZ=" prefix with nothing after it,
// so that case is caught first and a panic is never let through.
func checkCron(spec string) (err error) {
	if (strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=")) && !strings.Contains(spec, " ") {
		return fmt.Errorf("a time zone needs a schedule after it")
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("unparseable")
		}
	}()
	_, err = cron.ParseStandard(spec)
	return err
}

func (d *decoder) retention(r *Retention) {
	for _, v := range []struct {
		key string
		n   int
	}{
		{"keepLast", r.KeepLast}, {"keepHourly", r.KeepHourly}, {"keepDaily", r.KeepDaily},
		{"keepWeekly", r.KeepWeekly}, {"keepMonthly", r.KeepMonthly}, {"keepYearly", r.KeepYearly},
	} {
		if v.n < 0 {
			d.errorf("retention."+v.key, "must not be negative")
		}
	}
	if r.IncompleteGrace < 0 {
		d.errorf("retention.incompleteGrace", "must not be negative")
	}
	if r.KeepLog < 0 {
		d.errorf("retention.keepLog", "must not be negative")
	}
}

func (d *decoder) agent(a *Agent) {
	if _, port, err := net.SplitHostPort(a.Listen); err != nil || port == "" {
		d.errorf("agent.listen", "%q is not host:port (like :9090)", a.Listen)
	}
	if a.CheckInterval < time.Second {
		d.errorf("agent.checkInterval", "must be at least 1s")
	}
	if a.ShutdownGrace < 0 {
		d.errorf("agent.shutdownGrace", "must not be negative")
	}
	if a.Capture.SegmentPeriod < 100*time.Millisecond {
		d.errorf("agent.capture.segmentPeriod", "must be at least 100ms")
	}
	if a.Capture.SegmentMiB < 1 || a.Capture.SegmentMiB > 32 {
		d.errorf("agent.capture.segmentMiB", "must be between 1 and 32")
	}
	if a.Capture.HashEvery < time.Second {
		d.errorf("agent.capture.hashEvery", "must be at least 1s")
	}
	if a.Capture.PackEvery < 10*time.Second {
		d.errorf("agent.capture.packEvery", "must be at least 10s")
	}
	if a.Capture.RPO < a.Capture.SegmentPeriod {
		d.errorf("agent.capture.rpo", "must be at least segmentPeriod (%s): a segment is stored only once closed", a.Capture.SegmentPeriod)
	}
	if a.Capture.Window < 0 {
		d.errorf("agent.capture.window", "must not be negative")
	}
	// client-go refuses these orders; say so here, with the line.
	le := a.LeaderElection
	switch {
	case le.RetryPeriod <= 0:
		d.errorf("agent.leaderElection.retryPeriod", "must be positive")
	case le.RenewDeadline <= le.RetryPeriod*6/5:
		d.errorf("agent.leaderElection.renewDeadline", "must be longer than 1.2 x retryPeriod (%s)", le.RetryPeriod)
	case le.LeaseDuration <= le.RenewDeadline:
		d.errorf("agent.leaderElection.leaseDuration", "must be longer than renewDeadline (%s)", le.RenewDeadline)
	}
}
