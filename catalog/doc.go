// Package catalog reads what is on a target: which backup sets exist,
// which are complete, their manifests and the hash chain between them. It
// verifies sets and applies the retention policy. It never writes a set;
// package snapshot does.
package catalog
