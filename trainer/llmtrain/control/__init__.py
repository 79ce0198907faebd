"""The reconcile driver both shells share: read the world through a `Store`, call the core, apply the plan."""

from .reconciler import Reconciler
from .store import Conflict, NotFound, Store

__all__ = ["Conflict", "NotFound", "Reconciler", "Store"]
