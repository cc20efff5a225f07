"""The flowlens lab: the scenario's ML-inference cluster, reproduced on one machine.

Availability zones are bridges, nodes and pods are network namespaces, node bandwidth
allowances are tbf shapers, ClusterIP Services are kube-proxy-style iptables rules, and the
reference inference workload runs for real inside the pods. The lab may use flowlens (it runs
one agent per node); nothing in flowlens uses the lab.
"""
