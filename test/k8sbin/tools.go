//go:build tools

// Package k8sbin pins the kube-apiserver and etcd that the rollout tests run; nothing imports it.
package k8sbin

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
