package kubevalue

import (
	"bytes"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"
)

// stored encodes obj as kube-apiserver stores it: its protobuf serializer.
func stored(t *testing.T, obj runtime.Object) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme).Encode(obj, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestMarkedForDeletion(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	meta := func(marked bool) metav1.ObjectMeta {
		m := metav1.ObjectMeta{Name: "shop", UID: "1234", ResourceVersion: "42", Labels: map[string]string{"team": "a"},
			CreationTimestamp: now, Finalizers: []string{"example.com/keep"}}
		if marked {
			m.DeletionTimestamp = &now
		}
		return m
	}
	ns := func(marked bool) *corev1.Namespace {
		return &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: meta(marked),
			Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}}
	}
	cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: meta(true), Data: map[string]string{"k": "v"}}
	marked := stored(t, ns(true))
	for _, tc := range []struct {
		name  string
		value []byte
		want  bool
	}{
		{"namespace", stored(t, ns(false)), false},
		{"namespace marked", marked, true},
		{"configmap marked", stored(t, cm), true},
		{"custom resource in JSON", []byte(`{"apiVersion":"example.com/v1","kind":"Shop","metadata":{"name":"a","finalizers":["x"]}}`), false},
		{"custom resource in JSON, marked", []byte(`{"apiVersion":"example.com/v1","kind":"Shop","metadata":{"name":"a","deletionTimestamp":"2026-01-02T03:04:05Z"}}`), true},
		{"encrypted at rest", append([]byte("k8s:enc:aescbc:v1:key1:"), marked...), false},
		{"truncated", marked[:len(marked)/2], false},
		{"not an object", []byte("192.0.2.10"), false},
		{"empty", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MarkedForDeletion(tc.value); got != tc.want {
				t.Errorf("MarkedForDeletion = %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzMarkedForDeletion: values come from a backup's log, written by
// whoever could write to etcd; reading one never panics or loops.
func FuzzMarkedForDeletion(f *testing.F) {
	f.Add([]byte("k8s\x00\x0a\x04\x0a\x02v1\x12\x06\x0a\x04\x4a\x02\x08\x01"))
	f.Add([]byte(`{"metadata":{"deletionTimestamp":"2026-01-01T00:00:00Z"}}`))
	f.Add([]byte("k8s\x00\x0a\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, v []byte) {
		MarkedForDeletion(v)
	})
}
