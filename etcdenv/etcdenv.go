package etcdenv

import (
	"bufio"
	"bytes"
	"path"
	"slices"
	"strings"
)

// Paths are where an etcd run by systemd takes its flags from, in the
// order they are looked for: kubespray's unit reads /etc/etcd.env, the
// etcd packages of Red Hat and Debian /etc/etcd/etcd.conf and
// /etc/default/etcd.
var Paths = []string{"/etc/etcd.env", "/etc/etcd/etcd.conf", "/etc/default/etcd"}

// Variables of those files that a restore takes the member from.
const (
	DataDirVar = "ETCD_DATA_DIR"
	NameVar    = "ETCD_NAME"
)

// FileVars are the variables that name a file etcd (or etcdctl, which
// kubespray points at the same PKI) reads.
var FileVars = []string{
	"ETCD_TRUSTED_CA_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "ETCD_CLIENT_CRL_FILE",
	"ETCD_PEER_TRUSTED_CA_FILE", "ETCD_PEER_CERT_FILE", "ETCD_PEER_KEY_FILE", "ETCD_PEER_CRL_FILE",
	"ETCD_CONFIG_FILE", "ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY",
}

// Var is one assignment of the file.
type Var struct{ Name, Value string }

// Env is a file's assignments in the order it makes them.
type Env []Var

// Parse reads NAME=value lines, values maybe quoted, "export" allowed;
// comments and lines that assign nothing are skipped.
func Parse(data []byte) Env {
	var out Env
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			continue
		}
		out = append(out, Var{name, strings.Trim(strings.TrimSpace(value), `"'`)})
	}
	return out
}

// Get is the value name is last assigned, as systemd reads the file: a
// later line overrides an earlier one.
func (e Env) Get(name string) (string, bool) {
	for _, v := range slices.Backward(e) {
		if v.Name == name {
			return v.Value, true
		}
	}
	return "", false
}

// Files are the assignments of FileVars to absolute paths, in the file's
// order: a relative one is resolved against the unit's working directory,
// which the file does not say.
func (e Env) Files() []Var {
	var out []Var
	for _, v := range e {
		if slices.Contains(FileVars, v.Name) && path.IsAbs(v.Value) {
			out = append(out, v)
		}
	}
	return out
}

// Set rewrites the lines of data that assign the names of vars, keeping
// every other line (comments, order, other variables) as it is. A name
// the file does not assign stays unassigned: etcd's default for it was
// the member's, and a person typing the runbook's sed gets the same file.
// Values are written unquoted, as systemd's EnvironmentFile reads them.
func Set(data []byte, vars []Var) []byte {
	var b bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		name, _, ok := strings.Cut(strings.TrimPrefix(trimmed, "export "), "=")
		name = strings.TrimSpace(name)
		if i := slices.IndexFunc(vars, func(v Var) bool { return v.Name == name }); ok && i >= 0 && !strings.HasPrefix(trimmed, "#") {
			line = vars[i].Name + "=" + vars[i].Value
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}
