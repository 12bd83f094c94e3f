package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestBackupObjectLockBucketWithout configures objectLock on a bucket made
// without Object Lock: the backup must fail naming the target and store
// nothing there, while the USB copy completes, and the doctor must fail
// the object-lock check from what the bucket says.
func TestBackupObjectLockBucketWithout(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1, s3: true})
	spec := w.spec()
	spec.objectLockDays = 7
	cfg := writeConfig(t, spec)

	r := runKdr(t, w.env(), w.backupArgs(cfg)...)
	if r.code == 0 {
		t.Fatalf("backup exited 0 though bucket %s cannot lock what objectLock asks\n%s", bucket, r)
	}
	mustContain(t, "the error", failureLine(t, r), "target s3",
		"bucket "+bucket+" has no Object Lock enabled; create it with object locking or remove objectLock from target s3")
	id := backupID(t, r)
	if keys := w.s3Keys(t); len(keys) != 0 {
		t.Errorf("the bucket holds %q after the refused backup, want nothing", keys)
	}
	entries := w.list(t, cfg)
	if len(entries) != 1 || entries[0].ID != id || !slices.Equal(entries[0].Targets, []string{"usb"}) {
		t.Errorf("list shows %+v, want %s complete on usb only", entries, id)
	}

	r = w.kdr(t, cfg, "doctor", "-o", "json")
	var rep doctorReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Clusters) != 1 {
		t.Fatalf("doctor -o json is not the report of one cluster: %v\n%s", err, r)
	}
	found := false
	for _, c := range rep.Clusters[0].Checks {
		if c.ID != "object-lock" {
			continue
		}
		found = true
		if c.Grade != "fail" || !strings.Contains(c.Reason, "target s3 has objectLock, but bucket "+bucket+" has no Object Lock enabled") {
			t.Errorf("object-lock: %s: %s, want fail on what the bucket says", c.Grade, c.Reason)
		}
		s3, _ := c.Evidence["targets"].(map[string]any)["s3"].(map[string]any)
		if s3["objectLockEnabled"] != false || s3["configuredDays"] != float64(7) {
			t.Errorf("object-lock evidence of s3: %v, want the bucket's lock off and 7 days configured", s3)
		}
	}
	if !found {
		t.Errorf("no object-lock check in the report\n%s", r)
	}
}

// TestCredentialsInEndpointsNotRepeated writes the S3 keys and an etcd
// password into the endpoints, as URLs allow: kdr refuses the config and
// says where credentials go, without printing them.
func TestCredentialsInEndpointsNotRepeated(t *testing.T) {
	w := newWorld(t, worldOptions{members: 1, s3: true})
	const etcdPassword = "etcd-PASSWORD-part"
	spec := w.spec()
	spec.s3Endpoint = "http://" + w.minio.AccessKey() + ":" + w.minio.SecretKey() + "@" + w.minio.Endpoint()
	spec.endpoints = []string{strings.Replace(spec.endpoints[0], "https://", "https://root:"+etcdPassword+"@", 1)}
	cfg := writeConfig(t, spec)
	for _, args := range [][]string{w.backupArgs(cfg), {"--config", cfg, "list"}, {"--config", cfg, "doctor"}} {
		r := runKdr(t, w.env(), args...)
		if r.code == 0 {
			t.Fatalf("kdr ran with credentials in the endpoints\n%s", r)
		}
		mustContain(t, "the error", failureLine(t, r),
			"targets[0].s3.endpoint: credentials do not belong in the endpoint",
			"clusters[0].etcd.endpoints[0]: credentials do not belong in the URL")
		for _, secret := range []string{w.minio.SecretKey(), etcdPassword} {
			if strings.Contains(r.stdout+r.stderr, secret) {
				t.Errorf("kdr %s printed a secret from an endpoint\n%s", args[2], r)
			}
		}
	}
}
