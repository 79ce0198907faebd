"""The llmtrain Kubernetes operator (kopf).

It imports `llmtrain.api` and `llmtrain.core`, never the workloads, and so needs no torch. The
handlers arrive with the operator issue; until then `llmtrain validate` and the CRDs are the API.
"""

__version__ = "0.1.0"
