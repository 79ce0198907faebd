"""The llmtrain API (group llmtrain.dev, version v1alpha1): pydantic models, the one source of truth.

`crdgen` turns them into `crds/*.yaml`; the operator, the local runner and the workload CLIs all
parse resources with them.
"""

from .common import API_VERSION, GROUP, VERSION
from .datasource import DataSource
from .errors import SpecError
from .manifests import load_resources, parse_resource, select_resource
from .modelexport import ModelExport
from .resource import Resource
from .trainingrun import TrainingRun

KINDS: tuple[type[Resource], ...] = (DataSource, TrainingRun, ModelExport)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "DataSource",
    "ModelExport",
    "Resource",
    "SpecError",
    "TrainingRun",
    "load_resources",
    "parse_resource",
    "select_resource",
]
