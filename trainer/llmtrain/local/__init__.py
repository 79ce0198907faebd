"""The local runner: the same reconcile core and Job manifests, executed as processes on one machine."""
