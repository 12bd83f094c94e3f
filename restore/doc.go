// Package restore rebuilds a control plane from a backup set. A restore is
// a Plan: an ordered list of Steps, each a value with an ID, a title, why
// it matters, where it runs, the commands a person would type, the action
// the engine runs and the check that proves it worked. The engine (Apply)
// runs one node's steps with a journal, so a restore that stops halfway
// resumes where it stopped and never repeats a destructive step; package
// runbooks prints the very same steps. A step that lacks a command, an
// action or a check cannot enter a plan.
//
// A plan made with BuildPlanAt restores to a revision of the set's
// captured log: fetch also copies the segments, a replay step
// (step_replay.go) brings a copy of the decrypted snapshot forward to the
// revision through package replay, and restore-etcd takes that database.
package restore
