// Package runbooks prints a restore plan as a runbook for people: Markdown
// to read on a screen and PDF to print and keep beside the machines.
//
// A runbook renders exactly the steps of a restore.Plan, the same values
// the engine runs, so the two cannot disagree: every title, reason,
// command and expected result comes from the plan's steps, and nothing here
// adds, drops or reorders a step. Around the steps it prints what an
// operator needs during an outage without any other document: the cluster
// and backup, who to call, the inventory recorded with the backup (hosts,
// addresses, DNS records, subnets, certificate expiry dates), and an
// appendix with the break-glass path that needs only age, zstd, tar and
// etcdutl.
//
// Both formats are built from one intermediate book, so the Markdown and
// the PDF say the same thing. The PDF is pure Go and uses only the PDF core
// fonts: it prints in black and white without losing meaning, carries
// "page N of M" footers and a table of contents with page numbers, and is
// byte-for-byte reproducible for a fixed Options.Now.
package runbooks
