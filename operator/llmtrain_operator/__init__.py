"""The llmtrain Kubernetes operator: a kopf shell over `llmtrain.core` (no torch, no workloads).

`python -m llmtrain_operator` runs it; `operator.Operator` is the instance tests start in a thread.
"""

__version__ = "0.1.0"
