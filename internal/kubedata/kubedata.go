// Package kubedata writes Kubernetes-like objects into etcd under
// /registry, the way kube-apiserver lays them out, so tests, the demo and
// benchmarks back up something that looks and compresses like a real
// control plane's keyspace.
package kubedata

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Options size the generated keyspace.
type Options struct {
	// Namespaces to create (default 10).
	Namespaces int
	// Bytes is the approximate total of values to write (default 1 MiB).
	Bytes int64
	// ObjectSize is the approximate size of one object (default 4 KiB, a
	// typical pod or configmap).
	ObjectSize int
	// Seed makes the data repeatable.
	Seed uint64
	// Progress, if set, is told the bytes written so far.
	Progress func(written int64)
}

// batchBytes keeps each transaction well under etcd's default 1.5 MiB
// request limit.
const batchBytes = 1 << 20

// maxTxnOps is etcd's default --max-txn-ops.
const maxTxnOps = 128

var kinds = []string{"configmaps", "secrets", "pods", "services", "deployments", "events", "leases"}

// Fill writes the objects and returns the number of keys written.
func Fill(ctx context.Context, cli *clientv3.Client, o Options) (int, error) {
	if o.Namespaces <= 0 {
		o.Namespaces = 10
	}
	if o.Bytes <= 0 {
		o.Bytes = 1 << 20
	}
	if o.ObjectSize <= 0 {
		o.ObjectSize = 4 << 10
	}
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	var ops []clientv3.Op
	var pending, written int64
	keys := 0
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("write kubernetes-like data: %w", err)
		}
		written += pending
		ops, pending = ops[:0], 0
		if o.Progress != nil {
			o.Progress(written)
		}
		return nil
	}
	put := func(key, value string) error {
		ops = append(ops, clientv3.OpPut(key, value))
		pending += int64(len(key) + len(value))
		keys++
		if pending >= batchBytes || len(ops) >= maxTxnOps {
			return flush()
		}
		return nil
	}
	for i := range o.Namespaces {
		ns := fmt.Sprintf("team-%02d", i)
		if err := put("/registry/namespaces/"+ns, object(rng, "Namespace", "", ns, 300)); err != nil {
			return keys, err
		}
	}
	for n := 0; written+pending < o.Bytes; n++ {
		kind := kinds[n%len(kinds)]
		ns := fmt.Sprintf("team-%02d", rng.IntN(o.Namespaces))
		name := fmt.Sprintf("%s-%06d", strings.TrimSuffix(kind, "s"), n)
		size := o.ObjectSize/2 + rng.IntN(o.ObjectSize)
		key := fmt.Sprintf("/registry/%s/%s/%s", kind, ns, name)
		if err := put(key, object(rng, kindName(kind), ns, name, size)); err != nil {
			return keys, err
		}
		if err := ctx.Err(); err != nil {
			return keys, err
		}
	}
	return keys, flush()
}

func kindName(plural string) string {
	s := strings.TrimSuffix(plural, "s")
	return strings.ToUpper(s[:1]) + s[1:]
}

// object renders a JSON object shaped like kube-apiserver's storage: the
// repeated field names compress well, the uid and data do not.
func object(rng *rand.Rand, kind, ns, name string, size int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"kind":%q,"apiVersion":"v1","metadata":{"name":%q,"namespace":%q,"uid":"%08x-%04x-%04x-%04x-%012x",`+
		`"resourceVersion":"%d","creationTimestamp":"2026-01-%02dT%02d:%02d:00Z","labels":{"app.kubernetes.io/name":%q,`+
		`"app.kubernetes.io/part-of":"shop"},"managedFields":[{"manager":"kubectl-client-side-apply","operation":"Update",`+
		`"apiVersion":"v1","fieldsType":"FieldsV1"}]},"data":{`,
		kind, name, ns, rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xffff, rng.Uint32()&0xffff, rng.Uint64()&0xffffffffffff,
		rng.IntN(1<<30), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), name)
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"key-%d":"value-%d-%x setting=%d enabled=true"`, i, i, rng.Uint32(), rng.IntN(100))
	}
	b.WriteString("}}")
	return b.String()
}
