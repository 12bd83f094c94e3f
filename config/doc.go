// Package config loads and checks kdr.yaml, the user's contract with kdr.
//
// Decoding is strict: an unknown key, a value of the wrong type, a second
// YAML document or a duplicate key is an error naming the file, the line and
// the key, so a typo never silently turns into a default. After decoding,
// Parse expands environment references, reads secrets from files, applies
// defaults and validates the whole, reporting every problem it finds at once.
//
// # Environment and secrets
//
// A string value may reference the environment as ${NAME}; "$$" is a
// literal "$". References are expanded in the decoded values, never in the
// raw text, so a variable's content cannot change the structure of the
// file. An unset variable is an error; a variable set to "" gives "".
//
// Secrets (S3 keys, the etcd password) come from the environment or from
// the accessKeyFile, secretKeyFile and passwordFile keys, which name a file
// whose content (without its trailing newline) is the secret: a Kubernetes
// Secret mounted as a volume, for instance. Relative file names are
// relative to the working directory. Secrets never come from command-line
// flags, and no error message of this package contains one.
//
// # Relative target directories
//
// A relative local.path is relative to the directory of the config file,
// not to the working directory: the offline recovery kit's kdr.yaml lies on
// the disk it restores from and says "path: ..", and that disk may be
// mounted anywhere. A Config built in code (Validate) must give an
// absolute path.
package config
