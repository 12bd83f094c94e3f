// Package fromconfig turns the parts of a loaded config into what the
// other packages take: opened storage targets, age recipients, etcd client
// options, TLS and clients, and a restore source. The commands and the agent share
// it, so a setting means the same in both.
package fromconfig
