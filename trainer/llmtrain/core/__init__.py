"""The functional core: pure functions from (resource, observed world) to (children, status, events).

No I/O here. The kopf operator and the local runner both call `reconcile` and apply its `Plan`;
neither holds logic the other lacks.
"""

from .context import Context
from .reconcile import Observed, Plan, reconcile

__all__ = ["Context", "Observed", "Plan", "reconcile"]
