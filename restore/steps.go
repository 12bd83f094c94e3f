package restore

// The restore's steps, in the order they run. Every node prepares before
// etcd starts anywhere; etcd starts everywhere before the control plane
// that caches it. Each step is defined, with its action, its check and the
// commands it prints, in its own file step_<id>.go. The replay step is in
// the plans to a revision only.
var phases = [][]stepDef{
	{stepPreflight, stepFetch, stepDecrypt, stepReplay, stepStopControlPlane, stepMoveAside, stepRestoreFiles, stepConfigureNode, stepRestoreEtcd},
	{stepStartEtcd},
	{stepCheckEtcd},
	{stepStartControlPlane},
}
