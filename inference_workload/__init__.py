"""The reference asynchronous inference workload that flowlens is built to observe.

A faithful, runnable copy of "Stable Diffusion on EKS": a front-end API that validates tasks
and publishes them to a topic, one filtered queue per runtime, a queue agent beside each
runtime, a Stable Diffusion WebUI-compatible runtime that loads its weights from S3, an
autoscaler with KEDA's ``aws-sqs-queue`` semantics and a load client. It stands apart from
``flowlens``: neither package imports the other.

Modules (one job each): ``tasks`` (schema and validation), ``aws`` (clients and provisioning),
``weights`` (checkpoint creation and Mountpoint-style reads), ``generate`` (deterministic image
work), ``model`` (the runtime's model and its load log), ``sdapi`` (WebUI request shapes),
``metrics`` (runtime metrics), ``runtime`` (HTTP API), ``inputs`` / ``results`` /
``visibility`` / ``queue_agent`` (the agent), ``api`` (front end), ``autoscaler``, ``load``,
``logs`` (logging set-up of the entry points). See README.md for how to run a pod's containers.
"""

__version__ = "0.1.0"
