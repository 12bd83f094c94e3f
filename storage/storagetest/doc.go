// Package storagetest is the conformance suite every storage.Target runs,
// like restic's backend test suite: the behaviour callers rely on (objects
// appear whole or not at all, key order, not-found, retention), checked the
// same way against a temp directory and a real S3 server. Each target's
// test file is a few lines that call Run with a constructor.
package storagetest
