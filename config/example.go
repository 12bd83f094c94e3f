package config

import _ "embed"

// Example is a commented kdr.yaml, as `kdr init` writes it. It is valid
// once S3_ACCESS_KEY and S3_SECRET_KEY are set in the environment.
//
//go:embed example.yaml
var Example []byte
