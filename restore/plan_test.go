package restore

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/manifest"
)

// TestPlanJSONIsCamelCase: `kdr restore plan -o json` names every field
// in one style, so a script reading it never has to guess between
// "etcdDataDir" and "EtcdDataDir". Every field that can be set is set, so
// that no omitempty field escapes the check.
func TestPlanJSONIsCamelCase(t *testing.T) {
	m := &manifest.Manifest{ID: "20261124T200000.000Z-000001", Cluster: "prod", Node: "cp1",
		State: manifest.State{Sets: testSets},
		Inventory: config.Inventory{APIEndpoint: "https://10.0.0.10:6443",
			Hosts: []config.Host{{Name: "cp1", IP: "10.0.0.11", Roles: []string{"etcd"}}}}}
	src := Source{Kind: "s3", Path: "/mnt/usb", Endpoint: "minio:9000", Bucket: "kdr", Prefix: "backups", Insecure: true}
	plan, err := BuildPlan(m, src, Options{
		Target: "s3", Nodes: []Node{{Name: "cp-new", IP: "10.0.0.21"}}, APIEndpoint: "https://10.0.0.20:6443",
		AllowedSigners: "ops@example.com ssh-ed25519 AAAA",
	})
	if err != nil {
		t.Fatal(err)
	}
	// And a plan to a revision, with its replay.
	at, err := BuildPlanAt(handChain(m, []int64{5}, 5), 5, src, plan.Options)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal([]*Plan{plan, at})
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				seen[k] = true
				if first := []rune(k)[0]; !unicode.IsLower(first) || strings.Contains(k, "_") {
					t.Errorf("%s.%s: not camelCase", path, k)
				}
				walk(path+"."+k, child)
			}
		case []any:
			for _, child := range v {
				walk(path+"[]", child)
			}
		}
	}
	walk("plan", doc)
	// The check must have seen the fields it is about, or it proves nothing.
	for _, k := range []string{"options", "apiEndpoint", "etcdDataDir", "kubernetesDir", "stagingDir", "identityFile",
		"configFile", "allowedSigners", "revisionBump", "token", "topology", "target", "nodes", "peerURL", "steps", "insecure",
		"toRevision", "replay", "segments", "proof", "head", "logEnd"} {
		if !seen[k] {
			t.Errorf("the plan's JSON has no %q", k)
		}
	}
}
