"""Text normalization: Unicode form, control characters, whitespace, case."""

from __future__ import annotations

import re
import unicodedata

from ..api.datasource import NormalizationSpec

# C0 and C1 controls except tab and newline; also DEL. Carriage returns become newlines first.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_TRAILING = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")


class Normalizer:
    def __init__(self, spec: NormalizationSpec) -> None:
        self.spec = spec

    def __call__(self, text: str) -> str:
        spec = self.spec
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if spec.unicode_form != "none":
            text = unicodedata.normalize(spec.unicode_form, text)
        if spec.strip_control_chars:
            text = _CONTROL.sub("", text)
        if spec.collapse_whitespace:
            text = _BLANK_LINES.sub("\n\n", _TRAILING.sub("\n", _SPACES.sub(" ", text))).strip()
        if spec.lowercase:
            text = text.lower()
        return text
