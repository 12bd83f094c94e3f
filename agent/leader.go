package agent

import (
	"context"
	"fmt"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/kdr-io/kdr/config"
)

// startElection campaigns for the Lease until ctx ends, then releases it.
// Outside a pod and without a kubeconfig there is no API server to hold a
// lease on: the agent runs alone and leads. done closes when the campaign
// has stopped and the lease is released.
func (a *Agent) startElection(ctx context.Context, le config.LeaderElection, done chan<- struct{}) error {
	inPod := os.Getenv("KUBERNETES_SERVICE_HOST") != ""
	if !le.Enabled || (!inPod && le.Kubeconfig == "") {
		if le.Enabled {
			a.log.Info("leader election off: not in a pod and no agent.leaderElection.kubeconfig")
		}
		a.leaderKnown.Store(true)
		a.setLeader(true)
		close(done)
		return nil
	}
	rc, err := restConfig(le.Kubeconfig)
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
			Client:     cs.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: a.o.Identity},
		},
		LeaseDuration:   le.LeaseDuration,
		RenewDeadline:   le.RenewDeadline,
		RetryPeriod:     le.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            le.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { a.setLeader(true) },
			OnStoppedLeading: func() { a.setLeader(false) },
			OnNewLeader: func(id string) {
				a.leaderID.Store(id)
				a.leaderKnown.Store(true)
				a.log.Info("leader observed", "leader", id)
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	a.election.Store(true)
	a.m.leader.Set(0)
	go func() {
		defer close(done)
		// Run returns when the lease is lost; campaign again until told
		// to stop.
		for ctx.Err() == nil {
			elector.Run(ctx)
		}
	}()
	return nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}
