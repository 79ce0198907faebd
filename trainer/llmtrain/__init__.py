"""llmtrain: train large language models from scratch, on Kubernetes or one machine.

Importing this package is cheap: torch, transformers and the like are imported only by the modules
that need them.
"""

__version__ = "0.1.0"
