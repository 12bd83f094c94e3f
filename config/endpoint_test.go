package config_test

import (
	"strings"
	"testing"

	"github.com/kdr-io/kdr/config"
)

// TestCredentialsInEndpoints: a user and password written into an
// endpoint are refused, and the refusal names the keys that do take them
// without repeating either, whether the rest of the endpoint parses or not.
func TestCredentialsInEndpoints(t *testing.T) {
	const user, secret = "AKIAUSERPART", "s3cretPART"
	t.Setenv("KDR_TEST_ENDPOINT_SECRET", secret)
	s3 := func(endpoint string) string {
		return strings.Replace(minimal, "    local: {path: /mnt/usb/kdr}\n",
			"    s3: {endpoint: \""+endpoint+"\", bucket: kdr}\n", 1)
	}
	etcd := func(endpoint string) string {
		return strings.Replace(minimal, "[https://10.0.0.11:2379]", "[\""+endpoint+"\"]", 1)
	}
	api := func(endpoint string) string {
		return minimal[:strings.Index(minimal, "encryption:")] +
			"    inventory: {apiEndpoint: \"" + endpoint + "\"}\n" +
			minimal[strings.Index(minimal, "encryption:"):]
	}
	const (
		s3Want   = "kdr.yaml:10: targets[0].s3.endpoint: credentials do not belong in the endpoint: give host[:port], and the keys as accessKey and secretKey from ${VAR}, or accessKeyFile and secretKeyFile"
		etcdWant = "kdr.yaml:4: clusters[0].etcd.endpoints[0]: credentials do not belong in the URL: use username and password or passwordFile"
		apiWant  = "kdr.yaml:6: clusters[0].inventory.apiEndpoint: credentials do not belong in the URL: it is stored in plain text with every backup"
	)
	for _, tc := range []struct{ name, doc, want string }{
		{"s3 url", s3("https://" + user + ":" + secret + "@s3.local:9000"), s3Want},
		{"s3 host", s3(user + ":" + secret + "@s3.local:9000"), s3Want},
		{"s3 slash in secret", s3("https://" + user + ":" + secret + "/x+y@s3.local:9000"), s3Want},
		{"s3 secret from env", s3("https://" + user + ":${KDR_TEST_ENDPOINT_SECRET}@s3.local:9000"), s3Want},
		{"etcd url", etcd("https://" + user + ":" + secret + "@10.0.0.11:2379"), etcdWant},
		{"etcd bad escape", etcd("https://" + user + ":" + secret + "%zz@10.0.0.11:2379"), etcdWant},
		{"etcd bad scheme", etcd("ftp://" + user + ":" + secret + "@10.0.0.11:2379"), etcdWant},
		{"etcd no port", etcd("https://" + user + ":" + secret + "@10.0.0.11"), etcdWant},
		{"api endpoint", api("https://" + user + ":" + secret + "@10.0.0.10:6443"), apiWant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse("kdr.yaml", []byte(tc.doc))
			if err == nil {
				t.Fatalf("parsed:\n%s", tc.doc)
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n%v\nwant:\n%s", err, tc.want)
			}
			for _, s := range []string{user, secret} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error repeats %q: %v", s, err)
				}
			}
		})
	}
}
