"""Decoding and repair, and the document filters; every rejection has a reason that is counted.

Quality score (0-1): the geometric mean of four heuristics, each 1 for ordinary prose:
- alphabetic fraction of non-space characters (prose ~0.8; scores alpha / 0.7, capped at 1);
- symbol density: '#' and ellipses per word (scores 1 - density / 0.1, floored at 0);
- mean word length: 1 within [3, 10] characters, falling off linearly to 0 at 1 and 20;
- repetition: 1 - the fraction of characters in lines that occur more than once.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from ..api.datasource import ValidationSpec, compile_pattern
from .formats import encodable, text_encoding_of


@dataclass
class Decoded:
    text: str | None
    reason: str | None = None  # why it could not be decoded
    repaired: bool = False


def decode(raw: bytes | str) -> Decoded:
    """Text from bytes: UTF-16/32 by BOM (or NUL pattern), UTF-8 (BOM allowed), else the detected
    encoding; mojibake repaired. Text that is not valid Unicode (a lone surrogate) is undecodable."""
    if isinstance(raw, str):
        return _repair(raw, repaired=False) if encodable(raw) else Decoded(None, "undecodable")
    wide = text_encoding_of(raw[:4096])
    if wide is not None:
        try:
            return _repair(raw.decode(wide), repaired=False)
        except UnicodeDecodeError:
            return Decoded(None, "undecodable")
    if raw.count(b"\x00") > max(1, len(raw) // 1000):
        return Decoded(None, "binary")
    try:
        return _repair(raw.decode("utf-8-sig"), repaired=False)
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(raw[: 1 << 20]).best()
    if best is None or best.encoding is None:
        return Decoded(None, "undecodable")
    try:
        text = raw.decode(best.encoding)
    except (UnicodeDecodeError, LookupError):
        return Decoded(None, "undecodable")
    return _repair(text, repaired=True)


# UTF-8 read as Latin-1/cp1252 leaves a lead byte (U+00C2-U+00F4) before a continuation byte shown
# as U+0080-U+00BF or one of cp1252's punctuation letters. Text without such a pair needs no ftfy.
_MOJIBAKE_HINT = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013-\u203a\u20ac\u2122]"
)


def _repair(text: str, repaired: bool) -> Decoded:
    if text.isascii() or not _MOJIBAKE_HINT.search(text):
        return Decoded(text, repaired=repaired)
    import ftfy.badness

    if ftfy.badness.is_bad(text):
        fixed = ftfy.fix_encoding(text)
        return Decoded(fixed, repaired=repaired or fixed != text)
    return Decoded(text, repaired=repaired)


_ALPHA_WORD = re.compile(r"\S+")


def quality_score(text: str) -> float:
    """The documented heuristic quality score in [0, 1]."""
    words = text.split()
    if not words:
        return 0.0
    non_space = sum(len(w) for w in words)
    alpha = sum(c.isalpha() for c in text) / max(non_space, 1)
    alpha_score = min(1.0, alpha / 0.7)
    symbols = text.count("#") + text.count("...") + text.count("\u2026")
    symbol_score = max(0.0, 1.0 - (symbols / len(words)) / 0.1)
    mean_len = non_space / len(words)
    if mean_len < 3:
        length_score = max(0.0, (mean_len - 1) / 2)
    elif mean_len > 10:
        length_score = max(0.0, (20 - mean_len) / 10)
    else:
        length_score = 1.0
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    counts = Counter(lines)
    repeated = sum(len(line) for line in lines if counts[line] > 1)
    repetition_score = 1.0 - repeated / max(sum(len(line) for line in lines), 1)
    scores = (alpha_score, symbol_score, length_score, repetition_score)
    if min(scores) <= 0:
        return 0.0
    return math.exp(sum(math.log(s) for s in scores) / len(scores))


class Filter:
    """The spec's document filters, compiled once."""

    def __init__(self, spec: ValidationSpec) -> None:
        self.spec = spec
        self.patterns = [compile_pattern(p) for p in spec.prohibited_patterns]  # RE2: linear time

    def reason_to_reject(self, text: str) -> str | None:
        """None when the document passes; else the counted reason."""
        if not text.strip():
            return "empty"
        if len(text) < self.spec.min_chars:
            return "too_short"
        if len(text) > self.spec.max_chars:
            return "too_long"
        if any(p.search(text) for p in self.patterns):
            return "prohibited_pattern"
        if self.spec.min_quality_score > 0 and quality_score(text) < self.spec.min_quality_score:
            return "low_quality"
        return None
