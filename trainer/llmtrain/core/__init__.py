"""The functional core: pure functions from (resource, observed world) to (children, status, events).

No I/O here. The kopf operator and the local runner both call `reconcile` and apply its `Plan`;
neither holds logic the other lacks. Each kind has its module (`datasource`, `trainingrun`,
`modelexport`: its children as a named structure, its dependencies, its status); `reconcile` is the
generic plan and diff; `progress` is the trainer's report, the one type both sides of it use.
"""

from .context import Context
from .plan import Observed, Plan
from .reconcile import reconcile

__all__ = ["Context", "Observed", "Plan", "reconcile"]
