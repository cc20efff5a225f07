"""Tests against a real kube-apiserver 1.20 + etcd on loopback (helpers in :mod:`tests.k8s.apiserver`)."""
