"""Final-answer extraction and comparison for chain-of-thought solutions.

The order of preference follows how solutions mark their answer: GSM8K's ``#### N``, a
``\\boxed{N}`` (MATH), a closing "the answer is N", and, failing all of those, the last number
in the text (the fallback used by zero-shot-CoT answer cleansing, Kojima et al. 2022).
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUM = r"-?\$?\s*\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?"
_HASH = re.compile(r"####\s*(" + _NUM + ")")
_BOXED = re.compile(r"\\boxed\{\s*([^{}]*)\}")
_ANSWER_IS = re.compile(r"answer\s*(?:is|=|:)\s*[:=]?\s*(" + _NUM + ")", re.IGNORECASE)
_ANY_NUM = re.compile(_NUM)


def normalize_number(s: str) -> str | None:
    """``"$1,234.50"`` → ``"1234.5"``; ``"3/4"`` → ``"0.75"``; None when not a number."""
    s = s.strip().rstrip(".").replace("$", "").replace(",", "").replace(" ", "")
    if not s:
        return None
    try:
        value = Fraction(s) if "/" in s else Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.15g}"  # 15 significant digits: .6g merged 12345.67 and 12345.68


def extract_final_answer(text: str | None) -> str | None:
    """The normalized final answer of a solution, or None when it has no number."""
    if not text:
        return None
    for pattern in (_HASH, _BOXED, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            n = normalize_number(found[-1])
            if n is not None:
                return n
    nums = _ANY_NUM.findall(text)
    return normalize_number(nums[-1]) if nums else None


def gold_from_gsm8k(answer_field: str) -> str | None:
    """GSM8K's gold answer is the text after ``####``; other formats give the answer alone."""
    if "####" in answer_field:
        return normalize_number(answer_field.split("####")[-1])
    return normalize_number(answer_field)


def answers_match(predicted: str | None, gold: str | None, rel_tol: float = 1e-6) -> bool:
    if predicted is None or gold is None:
        return False
    try:
        p, g = float(Fraction(predicted)), float(Fraction(gold))
    except (ValueError, ZeroDivisionError):
        return predicted.strip().lower() == gold.strip().lower()
    return abs(p - g) <= rel_tol * max(1.0, abs(g))
