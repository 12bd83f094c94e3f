package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// maxSecretSize bounds a secret file: a key or password, not a bundle.
const maxSecretSize = 64 << 10

// readSecrets fills each secret from its ...File key.
func (d *decoder) readSecrets(cfg *Config) {
	for i := range cfg.Clusters {
		e := &cfg.Clusters[i].Etcd
		d.secret(fmt.Sprintf("clusters[%d].etcd", i), "password", &e.Password, e.PasswordFile)
	}
	for i := range cfg.Targets {
		s := cfg.Targets[i].S3
		if s == nil {
			continue
		}
		path := fmt.Sprintf("targets[%d].s3", i)
		d.secret(path, "accessKey", &s.AccessKey, s.AccessKeyFile)
		d.secret(path, "secretKey", &s.SecretKey, s.SecretKeyFile)
	}
}

// secret sets *value from file when file is set. Both set is an error: one
// of them would be silently ignored.
func (d *decoder) secret(parent, key string, value *string, file string) {
	if file == "" {
		return
	}
	fileKey := join(parent, key+"File")
	if *value != "" {
		d.errorf(fileKey, "set either %s or %sFile, not both", key, key)
		return
	}
	s, err := readSecretFile(file)
	if err != nil {
		d.errorf(fileKey, "%v", err)
		return
	}
	if s == "" {
		d.errorf(fileKey, "%s is empty", file)
		return
	}
	*value = s
}

func readSecretFile(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%s does not exist", name)
		}
		return "", err
	}
	defer f.Close()
	// A device or pipe could block the load or never end.
	if st, err := f.Stat(); err != nil {
		return "", err
	} else if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", name, err)
	}
	if len(data) > maxSecretSize {
		return "", fmt.Errorf("%s is larger than %d KiB, not a secret", name, maxSecretSize>>10)
	}
	s := string(data)
	s = strings.TrimSuffix(s, "\n")
	s = strings.TrimSuffix(s, "\r")
	return s, nil
}
