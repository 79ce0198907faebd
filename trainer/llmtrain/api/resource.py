"""The envelope every kind shares: apiVersion, kind, metadata, spec, status, and CRD facts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from .base import ApiModel, CelRule
from .common import API_VERSION, NAME_RULE, ObjectMeta


@dataclass(frozen=True)
class PrinterColumn:
    """A `kubectl get` column (`priority` 1 shows only with `-o wide`)."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0

    def to_crd(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            out["priority"] = self.priority
        return out


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation.")


class Resource(ApiModel):
    """A custom resource of group llmtrain.dev: subclasses name the kind and its CRD facts."""

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SHORT_NAMES: ClassVar[tuple[str, ...]]
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]]

    cel_rules: ClassVar[tuple[CelRule, ...]] = (NAME_RULE,)

    api_version: Literal["llmtrain.dev/v1alpha1"] = Field(default=API_VERSION, description="llmtrain.dev/v1alpha1")
    metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name
