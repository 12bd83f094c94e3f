package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/fromconfig"
	"github.com/kdr-io/kdr/internal/testenv"
)

// agentMetrics are the metrics `kdr agent` exports, with their types. Every
// kdr_ name the dashboard and the alerts use must be one of these (or a
// histogram's _bucket, _sum or _count).
var agentMetrics = map[string]string{
	"kdr_backup_last_success_timestamp_seconds":         "gauge",
	"kdr_backup_duration_seconds":                       "histogram",
	"kdr_backup_bytes_written_total":                    "counter",
	"kdr_backup_failures_total":                         "counter",
	"kdr_etcd_db_size_bytes":                            "gauge",
	"kdr_etcd_revision":                                 "gauge",
	"kdr_backups":                                       "gauge",
	"kdr_backup_oldest_timestamp_seconds":               "gauge",
	"kdr_backup_newest_timestamp_seconds":               "gauge",
	"kdr_certificate_expiry_timestamp_seconds":          "gauge",
	"kdr_target_up":                                     "gauge",
	"kdr_drill_last_success_timestamp_seconds":          "gauge",
	"kdr_drill_rto_seconds":                             "gauge",
	"kdr_drill_rpo_seconds":                             "gauge",
	"kdr_drill_failures_total":                          "counter",
	"kdr_job_runs_total":                                "counter",
	"kdr_job_skipped_total":                             "counter",
	"kdr_job_next_run_timestamp_seconds":                "gauge",
	"kdr_leader":                                        "gauge",
	"kdr_config_last_reload_successful":                 "gauge",
	"kdr_prune_deleted_total":                           "counter",
	"kdr_log_segments_total":                            "counter",
	"kdr_log_bytes_written_total":                       "counter",
	"kdr_log_failures_total":                            "counter",
	"kdr_log_full_set_requests_total":                   "counter",
	"kdr_log_durable_revision":                          "gauge",
	"kdr_log_lag_seconds":                               "gauge",
	"kdr_log_lag_revisions":                             "gauge",
	"kdr_log_pack_runs_total":                           "counter",
	"kdr_log_packed_segments_total":                     "counter",
	"kdr_log_window_start_timestamp_seconds":            "gauge",
	"kdr_log_window_end_timestamp_seconds":              "gauge",
	"kdr_log_window_start_revision":                     "gauge",
	"kdr_log_window_end_revision":                       "gauge",
	"kdr_log_window_contiguous_start_timestamp_seconds": "gauge",
	"kdr_log_window_gaps":                               "gauge",
	"kdr_log_start_timestamp_seconds":                   "gauge",
	"kdr_log_rpo_objective_seconds":                     "gauge",
	"kdr_log_window_objective_seconds":                  "gauge",
	"kdr_drill_replay_seconds":                          "gauge",
}

const (
	namespace   = "kdr-system"
	configPath  = "/etc/kdr/kdr.yaml"
	metricsPort = 9090
)

// kinds are the only objects the manifests may hold, each decoded strictly
// into its API type.
var kinds = map[string]struct {
	apiVersion string
	new        func() any
}{
	"Namespace":      {"v1", func() any { return new(corev1.Namespace) }},
	"ServiceAccount": {"v1", func() any { return new(corev1.ServiceAccount) }},
	"ConfigMap":      {"v1", func() any { return new(corev1.ConfigMap) }},
	"Secret":         {"v1", func() any { return new(corev1.Secret) }},
	"Service":        {"v1", func() any { return new(corev1.Service) }},
	"Deployment":     {"apps/v1", func() any { return new(appsv1.Deployment) }},
	"Role":           {"rbac.authorization.k8s.io/v1", func() any { return new(rbacv1.Role) }},
	"RoleBinding":    {"rbac.authorization.k8s.io/v1", func() any { return new(rbacv1.RoleBinding) }},
	"ServiceMonitor": {"monitoring.coreos.com/v1", func() any { return new(monitoringv1.ServiceMonitor) }},
	"PrometheusRule": {"monitoring.coreos.com/v1", func() any { return new(monitoringv1.PrometheusRule) }},
}

// object is one document of a build, decoded.
type object struct {
	kind, name, namespace string
	obj                   any    // a pointer to the kind's Go type
	raw                   []byte // the document as JSON
}

var baseObjects = []string{
	"Namespace/kdr-system", "ServiceAccount/kdr", "Role/kdr", "RoleBinding/kdr",
	"ConfigMap/kdr-config", "Deployment/kdr", "Service/kdr",
}

// builds are the kustomizations a user applies, with the objects each makes.
var builds = []struct {
	dir  string
	want []string
}{
	{"base", baseObjects},
	{"default", append(slices.Clone(baseObjects), "ServiceMonitor/kdr", "PrometheusRule/kdr", "ConfigMap/kdr-dashboard")},
}

// kustomize builds dir with kubectl, as `kubectl apply -k` would, and
// decodes every object.
func kustomize(t *testing.T, dir string) []object {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t, "kubectl"), "kustomize", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.Bytes())
	}
	objs, err := decodeAll(out)
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	return objs
}

// decodeAll splits a multi-document YAML stream and decodes each document.
func decodeAll(data []byte) ([]object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []object
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("splitting documents: %w", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		o, err := decode(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(objs)+1, err)
		}
		objs = append(objs, o)
	}
}

// decode decodes one YAML document into its kind's Go type, refusing
// unknown and duplicate fields and fields in the wrong case, as the API
// server's strict field validation does.
func decode(doc []byte) (object, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return object{}, err
	}
	var head struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(js, &head); err != nil {
		return object{}, err
	}
	k, ok := kinds[head.Kind]
	if !ok {
		return object{}, fmt.Errorf("%s %s: a kind the manifests should not hold", head.Kind, head.Metadata.Name)
	}
	if head.APIVersion != k.apiVersion {
		return object{}, fmt.Errorf("%s %s: apiVersion %q, want %q", head.Kind, head.Metadata.Name, head.APIVersion, k.apiVersion)
	}
	obj := k.new()
	strict, err := sigsjson.UnmarshalStrict(js, obj)
	if err != nil {
		return object{}, fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, err)
	}
	if len(strict) > 0 {
		return object{}, fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, errors.Join(strict...))
	}
	return object{kind: head.Kind, name: head.Metadata.Name, namespace: head.Metadata.Namespace, obj: obj, raw: js}, nil
}

// find returns the object of kind and name as its Go type, or fails.
func find[T any](t *testing.T, objs []object, kind, name string) *T {
	t.Helper()
	return findObject(t, objs, kind, name).obj.(*T)
}

func findObject(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			return o
		}
	}
	t.Fatalf("no %s %s in the build", kind, name)
	return object{}
}

func TestBuildObjects(t *testing.T) {
	for _, b := range builds {
		t.Run(b.dir, func(t *testing.T) {
			var got []string
			for _, o := range kustomize(t, b.dir) {
				got = append(got, o.kind+"/"+o.name)
				if o.kind != "Namespace" && o.namespace != namespace {
					t.Errorf("%s %s is in namespace %q, want %q", o.kind, o.name, o.namespace, namespace)
				}
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(b.want))
			if !slices.Equal(got, want) {
				t.Errorf("objects:\n got %v\nwant %v", got, want)
			}
		})
	}
}

func TestDeployment(t *testing.T) {
	checks := []struct {
		name  string
		check func(d *appsv1.Deployment, c *corev1.Container) error
	}{
		{"two replicas", func(d *appsv1.Deployment, _ *corev1.Container) error {
			switch r := d.Spec.Replicas; {
			case r == nil:
				return errors.New("replicas unset (1), want 2")
			case *r != 2:
				return fmt.Errorf("replicas %d, want 2", *r)
			}
			return nil
		}},
		{"selector matches the pods", func(d *appsv1.Deployment, _ *corev1.Container) error {
			sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
			if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				return fmt.Errorf("selector %v does not match the template's labels %v (%v)", d.Spec.Selector, d.Spec.Template.Labels, err)
			}
			return nil
		}},
		{"on control-plane nodes only", func(d *appsv1.Deployment, _ *corev1.Container) error {
			const role = "node-role.kubernetes.io/control-plane"
			p := d.Spec.Template.Spec
			if v, ok := p.NodeSelector[role]; !ok || v != "" {
				return fmt.Errorf("nodeSelector %v lacks %s: \"\"", p.NodeSelector, role)
			}
			tolerates := slices.ContainsFunc(p.Tolerations, func(tol corev1.Toleration) bool {
				return tol.Key == role && tol.Operator == corev1.TolerationOpExists && tol.Effect == corev1.TaintEffectNoSchedule
			})
			if !tolerates {
				return fmt.Errorf("tolerations %v do not tolerate %s:NoSchedule", p.Tolerations, role)
			}
			return nil
		}},
		{"replicas prefer different nodes", func(d *appsv1.Deployment, _ *corev1.Container) error {
			a := d.Spec.Template.Spec.Affinity
			if a == nil || a.PodAntiAffinity == nil {
				return errors.New("no podAntiAffinity")
			}
			for _, w := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
				sel, err := metav1.LabelSelectorAsSelector(w.PodAffinityTerm.LabelSelector)
				if err == nil && w.PodAffinityTerm.TopologyKey == "kubernetes.io/hostname" && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
					return nil
				}
			}
			return errors.New("no preferred anti-affinity term on kubernetes.io/hostname selecting the pods")
		}},
		{"runs the agent", func(_ *appsv1.Deployment, c *corev1.Container) error {
			want := []string{"kdr", "agent", "--config", configPath}
			if !slices.Equal(c.Command, want) || len(c.Args) > 0 {
				return fmt.Errorf("command %q args %q, want %q", c.Command, c.Args, want)
			}
			if !strings.HasPrefix(c.Image, "ghcr.io/kdr-io/kdr:") {
				return fmt.Errorf("image %q", c.Image)
			}
			return nil
		}},
		{"node name from the downward API", func(_ *appsv1.Deployment, c *corev1.Container) error {
			for _, e := range c.Env {
				if e.Name == "KDR_NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
					return nil
				}
			}
			return errors.New("no KDR_NODE_NAME from spec.nodeName")
		}},
		{"resources", func(_ *appsv1.Deployment, c *corev1.Container) error {
			r := c.Resources
			for _, q := range []struct {
				what string
				q    resource.Quantity
			}{{"cpu request", r.Requests[corev1.ResourceCPU]}, {"memory request", r.Requests[corev1.ResourceMemory]}, {"memory limit", r.Limits[corev1.ResourceMemory]}} {
				if q.q.IsZero() {
					return fmt.Errorf("no %s", q.what)
				}
			}
			return nil
		}},
		{"GOMEMLIMIT a little under the memory limit", func(_ *appsv1.Deployment, c *corev1.Container) error {
			limit := c.Resources.Limits[corev1.ResourceMemory]
			for _, e := range c.Env {
				if e.Name != "GOMEMLIMIT" {
					continue
				}
				n, err := goMemLimit(e.Value)
				if err != nil {
					return err
				}
				if lim := limit.Value(); n >= lim || n < lim*3/4 {
					return fmt.Errorf("GOMEMLIMIT %s is not between 75%% and 100%% of the memory limit %s", e.Value, limit.String())
				}
				return nil
			}
			return errors.New("no GOMEMLIMIT")
		}},
		{"probes", func(_ *appsv1.Deployment, c *corev1.Container) error {
			if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" && p.ContainerPort == metricsPort }) {
				return fmt.Errorf("no port metrics %d in %v", metricsPort, c.Ports)
			}
			for _, p := range []struct {
				what  string
				probe *corev1.Probe
				path  string
			}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "metrics" {
					return fmt.Errorf("%s probe %+v, want GET %s on port metrics", p.what, p.probe, p.path)
				}
			}
			return nil
		}},
		{"locked down", func(d *appsv1.Deployment, c *corev1.Container) error {
			p := d.Spec.Template.Spec
			sc := c.SecurityContext
			switch {
			case p.HostNetwork || p.HostPID || p.HostIPC:
				return errors.New("shares a host namespace")
			case sc == nil:
				return errors.New("no container securityContext")
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				return errors.New("root filesystem not read-only")
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				return errors.New("privilege escalation not disallowed")
			case sc.Privileged != nil && *sc.Privileged:
				return errors.New("privileged")
			case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
				return fmt.Errorf("capabilities %+v, want drop [ALL] and none added", sc.Capabilities)
			case p.SecurityContext == nil || p.SecurityContext.SeccompProfile == nil || p.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
				return errors.New("pod seccompProfile is not RuntimeDefault")
			}
			return nil
		}},
		// kubeadm's keys are root-owned 0600: any other uid cannot read
		// them, and reading them as their owner needs no capability.
		{"uid 0 to read kubeadm's keys", func(d *appsv1.Deployment, c *corev1.Container) error {
			var uid *int64
			if psc := d.Spec.Template.Spec.SecurityContext; psc != nil {
				uid = psc.RunAsUser
			}
			if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
				uid = c.SecurityContext.RunAsUser
			}
			switch {
			case uid == nil:
				return errors.New("runAsUser unset (the image's user), want 0")
			case *uid != 0:
				return fmt.Errorf("runAsUser %d, want 0", *uid)
			}
			return nil
		}},
		{"mounts read-only but /tmp", func(d *appsv1.Deployment, c *corev1.Container) error {
			vols := map[string]corev1.Volume{}
			for _, v := range d.Spec.Template.Spec.Volumes {
				vols[v.Name] = v
			}
			var hostPaths []string
			tmp := false
			for _, m := range c.VolumeMounts {
				v, ok := vols[m.Name]
				switch {
				case !ok:
					return fmt.Errorf("mount %s has no volume", m.Name)
				case v.EmptyDir != nil:
					if m.MountPath != "/tmp" {
						return fmt.Errorf("emptyDir %s at %s, want /tmp", m.Name, m.MountPath)
					}
					tmp = true
				case !m.ReadOnly:
					return fmt.Errorf("mount %s at %s is writable", m.Name, m.MountPath)
				}
				if v.HostPath != nil {
					hostPaths = append(hostPaths, v.HostPath.Path)
				}
			}
			if !slices.Contains(hostPaths, "/etc/kubernetes") {
				return fmt.Errorf("hostPaths %v lack /etc/kubernetes", hostPaths)
			}
			if !tmp {
				// The root filesystem is read-only; drills need scratch space.
				return errors.New("no emptyDir at /tmp")
			}
			return nil
		}},
		{"config and credentials", func(d *appsv1.Deployment, c *corev1.Container) error {
			cm, err := mountOf(d, c, func(v corev1.Volume) bool { return v.ConfigMap != nil && v.ConfigMap.Name == "kdr-config" })
			if err != nil {
				return fmt.Errorf("ConfigMap kdr-config: %w", err)
			}
			if cm.MountPath != filepath.Dir(configPath) || cm.SubPath != "" {
				// A subPath mount never sees the ConfigMap's updates.
				return fmt.Errorf("ConfigMap kdr-config at %s (subPath %q), want %s whole", cm.MountPath, cm.SubPath, filepath.Dir(configPath))
			}
			if _, err := mountOf(d, c, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "kdr-s3" }); err != nil {
				return fmt.Errorf("Secret kdr-s3: %w", err)
			}
			// The signing key in a Secret of its own, so a stolen bucket
			// credential does not come with the key that makes sets trusted.
			sm, err := mountOf(d, c, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "kdr-signing" })
			if err != nil {
				return fmt.Errorf("Secret kdr-signing: %w", err)
			}
			if !sm.ReadOnly {
				return errors.New("Secret kdr-signing is mounted writable")
			}
			return nil
		}},
	}
	for _, b := range builds {
		d := find[appsv1.Deployment](t, kustomize(t, b.dir), "Deployment", "kdr")
		if n := len(d.Spec.Template.Spec.Containers); n != 1 || len(d.Spec.Template.Spec.InitContainers) > 0 {
			t.Fatalf("%s: %d containers and %d init containers, want one container", b.dir, n, len(d.Spec.Template.Spec.InitContainers))
		}
		c := &d.Spec.Template.Spec.Containers[0]
		for _, ch := range checks {
			t.Run(b.dir+"/"+ch.name, func(t *testing.T) {
				if err := ch.check(d, c); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// goMemLimit parses the Go runtime's GOMEMLIMIT syntax (bytes with an
// optional B, KiB, MiB, GiB or TiB suffix).
func goMemLimit(s string) (int64, error) {
	for i, suffix := range []string{"TiB", "GiB", "MiB", "KiB", "B"} {
		if num, ok := strings.CutSuffix(s, suffix); ok {
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("GOMEMLIMIT %q: %w", s, err)
			}
			return n << (10 * (4 - i)), nil
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// mountOf returns the container's mount of the volume that matches.
func mountOf(d *appsv1.Deployment, c *corev1.Container, match func(corev1.Volume) bool) (corev1.VolumeMount, error) {
	for _, v := range d.Spec.Template.Spec.Volumes {
		if !match(v) {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name {
				return m, nil
			}
		}
		return corev1.VolumeMount{}, fmt.Errorf("volume %s is not mounted", v.Name)
	}
	return corev1.VolumeMount{}, errors.New("no such volume")
}

func TestServiceSelectsThePods(t *testing.T) {
	objs := kustomize(t, "base")
	d := find[appsv1.Deployment](t, objs, "Deployment", "kdr")
	s := find[corev1.Service](t, objs, "Service", "kdr")
	if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Service selector %v does not select the pods (labels %v)", s.Spec.Selector, d.Spec.Template.Labels)
	}
	if !s.Spec.PublishNotReadyAddresses {
		t.Error("Service does not publish unready pods: an agent unready for a dead target would stop being scraped")
	}
	ok := slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool {
		return p.Name == "metrics" && p.Port == metricsPort && p.TargetPort.String() == "metrics"
	})
	if !ok {
		t.Errorf("Service ports %v lack metrics %d -> metrics", s.Spec.Ports, metricsPort)
	}
}

// TestRoleGrantsOnlyTheLease: the agent needs the API only for leader
// election.
func TestRoleGrantsOnlyTheLease(t *testing.T) {
	objs := kustomize(t, "base")
	role := find[rbacv1.Role](t, objs, "Role", "kdr")
	verbs := map[string][]string{} // verb -> resourceNames
	for _, r := range role.Rules {
		if !slices.Equal(r.APIGroups, []string{"coordination.k8s.io"}) || !slices.Equal(r.Resources, []string{"leases"}) || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %+v grants more than coordination.k8s.io leases", r)
		}
		for _, v := range r.Verbs {
			verbs[v] = append(verbs[v], r.ResourceNames...)
		}
	}
	lease := agentConfig(t, objs).Agent.LeaderElection
	if !lease.Enabled || lease.Namespace != role.Namespace {
		t.Errorf("config's leader election %+v is not on in the Role's namespace %s", lease, role.Namespace)
	}
	want := map[string][]string{"create": nil, "get": {lease.Name}, "update": {lease.Name}, "patch": {lease.Name}}
	if len(verbs) != len(want) {
		t.Errorf("verbs %v, want exactly %v", verbs, want)
	}
	for v, names := range want {
		if got, ok := verbs[v]; !ok || !slices.Equal(got, names) {
			t.Errorf("verb %s on resourceNames %v, want %v", v, got, names)
		}
	}
	rb := find[rbacv1.RoleBinding](t, objs, "RoleBinding", "kdr")
	d := find[appsv1.Deployment](t, objs, "Deployment", "kdr")
	sa := rbacv1.Subject{Kind: "ServiceAccount", Name: d.Spec.Template.Spec.ServiceAccountName, Namespace: namespace}
	if rb.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name}) || !slices.Equal(rb.Subjects, []rbacv1.Subject{sa}) {
		t.Errorf("RoleBinding %+v %+v does not bind Role %s to %+v only", rb.RoleRef, rb.Subjects, role.Name, sa)
	}
}

// agentConfig loads the ConfigMap's kdr.yaml with the config package, as
// the agent would in its pod: the files of the example Secret stand in for
// the Secret's mount.
func agentConfig(t *testing.T, objs []object) *config.Config {
	t.Helper()
	cm := find[corev1.ConfigMap](t, objs, "ConfigMap", "kdr-config")
	text, ok := cm.Data[filepath.Base(configPath)]
	if !ok {
		t.Fatalf("ConfigMap kdr-config has no %s", filepath.Base(configPath))
	}
	d := find[appsv1.Deployment](t, objs, "Deployment", "kdr")
	c := &d.Spec.Template.Spec.Containers[0]
	m, err := mountOf(d, c, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "kdr-s3" })
	if err != nil {
		t.Fatalf("Secret kdr-s3: %v", err)
	}
	dir := t.TempDir()
	for k, v := range exampleSecret(t).StringData {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	text = strings.ReplaceAll(text, m.MountPath+"/", dir+"/")
	cfg, err := config.Parse(configPath, []byte(text))
	if err != nil {
		t.Fatalf("the agent would refuse its config:\n%v", err)
	}
	return cfg
}

func exampleSecret(t *testing.T) *corev1.Secret {
	t.Helper()
	data, err := os.ReadFile("examples/secret-s3.yaml")
	if err != nil {
		t.Fatal(err)
	}
	o, err := decode(data)
	if err != nil {
		t.Fatalf("examples/secret-s3.yaml: %v", err)
	}
	s, ok := o.obj.(*corev1.Secret)
	if !ok || s.Name != "kdr-s3" || s.Namespace != namespace {
		t.Fatalf("examples/secret-s3.yaml is %s %s/%s, want Secret %s/kdr-s3", o.kind, o.namespace, o.name, namespace)
	}
	return s
}

func TestAgentConfig(t *testing.T) {
	objs := kustomize(t, "base")
	cfg := agentConfig(t, objs)
	secret := exampleSecret(t)
	d := find[appsv1.Deployment](t, objs, "Deployment", "kdr")
	c := &d.Spec.Template.Spec.Containers[0]

	if _, err := crypto.ParseRecipients(cfg.Encryption.Recipients); err != nil {
		t.Errorf("recipients: %v", err)
	}
	if _, err := fromconfig.Trust(cfg); err != nil {
		t.Errorf("trusted signing keys: %v", err)
	}
	if !strings.HasPrefix(cfg.Signing.KeyFile, "/etc/kdr-signing/") {
		t.Errorf("signing.keyFile %q is not in the mounted Secret kdr-signing", cfg.Signing.KeyFile)
	}
	if _, port, _ := net.SplitHostPort(cfg.Agent.Listen); port != strconv.Itoa(metricsPort) {
		t.Errorf("agent.listen %q is not the container's port %d", cfg.Agent.Listen, metricsPort)
	}
	var s3 int
	for _, tg := range cfg.Targets {
		if tg.S3 == nil {
			continue
		}
		s3++
		if tg.S3.AccessKey != secret.StringData["access-key"] || tg.S3.SecretKey != secret.StringData["secret-key"] {
			t.Errorf("target %s does not take its keys from the Secret kdr-s3", tg.Name)
		}
	}
	if s3 == 0 {
		t.Error("no S3 target")
	}
	for _, cl := range cfg.Clusters {
		for _, ep := range cl.Etcd.Endpoints {
			if !strings.HasPrefix(ep, "https://") {
				t.Errorf("cluster %s: endpoint %s is not TLS", cl.Name, ep)
			}
		}
		if cl.Etcd.TLS == nil {
			t.Errorf("cluster %s: no client certificate", cl.Name)
			continue
		}
		for _, f := range []string{cl.Etcd.TLS.CA, cl.Etcd.TLS.Cert, cl.Etcd.TLS.Key} {
			if !underHostPath(d, c, f) {
				t.Errorf("cluster %s: %s is not under a hostPath mount", cl.Name, f)
			}
		}
	}
}

// underHostPath says whether file is in a hostPath volume mounted at the
// same path, so the container sees the node's file where the config says.
func underHostPath(d *appsv1.Deployment, c *corev1.Container, file string) bool {
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.HostPath == nil || !strings.HasPrefix(file, v.HostPath.Path+"/") {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name && m.MountPath == v.HostPath.Path && m.SubPath == "" {
				return true
			}
		}
	}
	return false
}

func TestServiceMonitor(t *testing.T) {
	objs := kustomize(t, "default")
	sm := find[monitoringv1.ServiceMonitor](t, objs, "ServiceMonitor", "kdr")
	svc := find[corev1.Service](t, objs, "Service", "kdr")
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select the Service (labels %v)", sm.Spec.Selector, svc.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" {
		t.Errorf("endpoints %+v, want the port metrics", sm.Spec.Endpoints)
	}
}

// metricRE finds metric names in PromQL and in prose.
var metricRE = regexp.MustCompile(`\bkdr_[a-zA-Z0-9_]+`)

// unknownMetrics returns the kdr_ names in text that the agent does not
// export, and fails if text uses none at all.
func unknownMetrics(t *testing.T, text string) []string {
	t.Helper()
	used := metricRE.FindAllString(text, -1)
	if len(used) == 0 {
		t.Fatal("uses no kdr_ metric")
	}
	var unknown []string
	for _, m := range used {
		if _, ok := agentMetrics[m]; ok {
			continue
		}
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
		if agentMetrics[base] == "histogram" {
			continue
		}
		if !slices.Contains(unknown, m) {
			unknown = append(unknown, m)
		}
	}
	return unknown
}

func TestDashboard(t *testing.T) {
	cm := find[corev1.ConfigMap](t, kustomize(t, "default"), "ConfigMap", "kdr-dashboard")
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("labels %v lack grafana_dashboard: \"1\"", cm.Labels)
	}
	text, ok := cm.Data["kdr-dashboard.json"]
	if !ok {
		t.Fatalf("no kdr-dashboard.json in %v", cm.Data)
	}
	type query struct {
		Expr string `json:"expr"`
	}
	var dash struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			Title   string  `json:"title"`
			Type    string  `json:"type"`
			Targets []query `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(text), &dash); err != nil {
		t.Fatalf("kdr-dashboard.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || len(dash.Panels) == 0 {
		t.Errorf("dashboard uid %q title %q with %d panels", dash.UID, dash.Title, len(dash.Panels))
	}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 || slices.Contains(p.Targets, query{}) {
			t.Errorf("panel %q has a missing or empty query", p.Title)
		}
	}
	if u := unknownMetrics(t, text); len(u) > 0 {
		t.Errorf("the dashboard uses metrics the agent does not export: %v", u)
	}
}

// alerts are the rules of the PrometheusRule, by name.
var alerts = []string{"KdrBackupTooOld", "KdrBackupFailing", "KdrDrillOverdue", "KdrCertificateExpiringSoon", "KdrTargetUnreachable",
	"KdrLogLagging", "KdrLogGap", "KdrLogWindowShort", "KdrLogPackFailing"}

func TestAlertRules(t *testing.T) {
	o := findObject(t, kustomize(t, "default"), "PrometheusRule", "kdr")
	pr := o.obj.(*monitoringv1.PrometheusRule)
	var names []string
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
			switch {
			case r.Alert == "":
				t.Errorf("group %s: a recording rule %q where only alerts belong", g.Name, r.Record)
			case r.Labels["severity"] != "warning" && r.Labels["severity"] != "critical":
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, r.Labels["severity"])
			case r.Annotations["summary"] == "" || r.Annotations["description"] == "":
				t.Errorf("%s: a summary and a description are required", r.Alert)
			}
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(names)), slices.Sorted(slices.Values(alerts))) {
		t.Errorf("alerts %v, want %v", names, alerts)
	}
	if u := unknownMetrics(t, string(o.raw)); len(u) > 0 {
		t.Errorf("the rules use metrics the agent does not export: %v", u)
	}

	// promtool reads a rule file, which is the PrometheusRule's spec.
	var doc struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(o.raw, &doc); err != nil {
		t.Fatal(err)
	}
	rules, err := yaml.JSONToYAML(doc.Spec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][]byte{"kdr-rules.yaml": rules}
	tests := ruleTests(t)
	for _, f := range tests {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(f)] = data
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	promtool := testenv.Binary(t, "promtool")
	test := []string{"test", "rules"}
	for _, f := range tests {
		test = append(test, filepath.Base(f))
	}
	for _, args := range [][]string{{"check", "rules", "kdr-rules.yaml"}, test} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// ruleTests returns promtool's unit test files for the alerts.
func ruleTests(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("monitoring/testdata/*_test.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no promtool tests in monitoring/testdata (%v)", err)
	}
	return files
}

// TestAlertRulesTestsCoverEveryAlert: promtool passes test files that
// leave an alert out, so this checks that each alert fires in one
// evaluation and stays quiet in another.
func TestAlertRulesTestsCoverEveryAlert(t *testing.T) {
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, f := range ruleTests(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var file struct {
			Tests []struct {
				AlertRuleTest []struct {
					Alertname string            `json:"alertname"`
					ExpAlerts []json.RawMessage `json:"exp_alerts"`
				} `json:"alert_rule_test"`
			} `json:"tests"`
		}
		if err := yaml.Unmarshal(data, &file); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, tc := range file.Tests {
			for _, a := range tc.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					quiet[a.Alertname] = true
				}
			}
		}
	}
	for _, a := range alerts {
		if !fires[a] || !quiet[a] {
			t.Errorf("%s: fires in a test %v, stays quiet in a test %v; want both", a, fires[a], quiet[a])
		}
	}
}

// TestImageIsTheRelease checks that every place naming the agent's image
// names the release in VERSION, the tag `make image` gives it: the
// Deployment as kustomize builds it and the overlay deploy/README.md has
// users write. `make set-version` changes all three.
func TestImageIsTheRelease(t *testing.T) {
	b, err := os.ReadFile("../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	release := strings.TrimSpace(string(b))
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(release) {
		t.Fatalf("VERSION %q is not vX.Y.Z", release)
	}
	want := "ghcr.io/kdr-io/kdr:" + release
	for _, build := range builds {
		d := find[appsv1.Deployment](t, kustomize(t, build.dir), "Deployment", "kdr")
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Image != want {
				t.Errorf("%s: container %s runs %s, want %s", build.dir, c.Name, c.Image, want)
			}
		}
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	tags := regexp.MustCompile(`(?m)^\s*newTag: (\S+)`).FindAllStringSubmatch(string(readme), -1)
	if len(tags) != 1 || tags[0][1] != release {
		t.Errorf("README.md's overlay names the tags %v, want just %s", tags, release)
	}
}
