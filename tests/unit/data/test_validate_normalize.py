"""Decoding and repair, filters with counted reasons, the quality score, normalization."""

from __future__ import annotations

import pytest

from llmtrain.api.datasource import NormalizationSpec, ValidationSpec
from llmtrain.data.normalize import Normalizer
from llmtrain.data.validate import Filter, decode, quality_score

PROSE = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be."
)


def test_utf8_with_bom_and_plain():
    assert decode("h\u00e9llo".encode("utf-8-sig")).text == "h\u00e9llo"
    assert decode(b"plain").repaired is False


def test_legacy_encoding_is_detected_and_counted_as_repaired():
    text = (
        "Les \u00e9l\u00e8ves \u00e9tudient la litt\u00e9rature fran\u00e7aise \u00e0 l'\u00e9cole, o\u00f9 le"
        " ma\u00eetre enseigne depuis des ann\u00e9es. "
    ) * 5
    decoded = decode(text.encode("latin-1"))
    assert decoded.text == text and decoded.repaired


def test_mojibake_is_repaired():
    broken = "The caf\u00c3\u00a9 was open, na\u00c3\u00afve visitors said."
    decoded = decode(broken)
    assert decoded.text == "The caf\u00e9 was open, na\u00efve visitors said." and decoded.repaired


def test_binary_is_rejected():
    assert decode(bytes(range(256)) * 20).reason == "binary"


def test_quality_score_separates_prose_from_junk():
    assert quality_score(PROSE) > 0.9
    assert quality_score("#### $$$ ### 1234 5678 ### ... ... ..." * 10) < 0.3
    assert quality_score("buy now\n" * 50) < 0.3
    assert quality_score("") == 0.0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("   ", "empty"),
        ("short", "too_short"),
        ("x" * 2000, "too_long"),
        ("Lorem ipsum dolor sit amet, consectetur adipiscing elit sed do eiusmod.", "prohibited_pattern"),
        ("#### $$$ ### 1234 5678 ### ... ... ... #### $$$ ### 1234 5678 ###", "low_quality"),
        (PROSE, None),
    ],
)
def test_filter_reasons(text, reason):
    spec = ValidationSpec(min_chars=20, max_chars=1000, min_quality_score=0.5, prohibited_patterns=["(?i)lorem ipsum"])
    assert Filter(spec).reason_to_reject(text) == reason


def test_normalization():
    normalize = Normalizer(
        NormalizationSpec(unicode_form="NFKC", lowercase=True, strip_control_chars=True, collapse_whitespace=True)
    )
    assert normalize("\ufb01ne  \t Caf\u0065\u0301\x07\r\n\n\n\nEnd  ") == "fine caf\u00e9\n\nend"
    keep = Normalizer(NormalizationSpec(unicode_form="none", strip_control_chars=False))
    assert keep("A\x07  b") == "A\x07  b"


def test_prohibited_patterns_run_in_linear_time():
    """(a+)+$ backtracks exponentially in Python's re on this text; RE2 finishes at once."""
    spec = ValidationSpec(min_chars=1, prohibited_patterns=["(a+)+$"])
    assert Filter(spec).reason_to_reject("a" * 50_000 + "b") is None
    assert Filter(spec).reason_to_reject("b" + "a" * 50_000) == "prohibited_pattern"


@pytest.mark.parametrize("pattern", [r"(a)\1", r"foo(?=bar)", r"(?<!x)y"])
def test_patterns_re2_cannot_run_are_refused_at_validation(pattern):
    from llmtrain.api import SpecError
    from llmtrain.api.manifests import parse_resource

    resource = {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": "c"},
        "spec": {"sources": [{"local": {"path": "d/*.txt"}}], "validation": {"prohibitedPatterns": ["ok", pattern]}},
    }
    with pytest.raises(SpecError) as caught:
        parse_resource(resource)
    assert [str(p) for p in caught.value.problems] == [
        "spec.validation.prohibitedPatterns[1]: " + p.message for p in caught.value.problems
    ]
    assert "not a pattern RE2" in caught.value.problems[0].message


def test_text_with_a_lone_surrogate_is_undecodable_not_a_crash():
    assert decode("half a pair: \ud800.").reason == "undecodable"
