"""Final-answer extraction and a conservative normalised key (pure functions, no I/O).

Extraction follows verl's DAPO scorer (``verl.utils.reward_score.math_dapo``): the last ``Answer: ...`` line wins
(Minerva format, case-insensitive); otherwise the content of the last ``\\boxed{...}``; otherwise ``None``.

The key only applies rewrites that cannot change the mathematical meaning (whitespace, ``\\left``/``\\right``,
``\\dfrac``/``\\tfrac``, math delimiters, a trailing full stop), so two answers with the same key are equivalent by
construction and only bucket representatives need math-verify.
"""

from __future__ import annotations

import re

ANSWER_PATTERN = re.compile(r"(?i)Answer\s*:\s*([^\n]+)")
LAST_NUMBER_PATTERN = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
ANSWER_FALLBACKS = ("none", "last_number")

_KEY_REWRITES = [
    ("\\left", ""),
    ("\\right", ""),
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
    ("\\displaystyle", ""),
    ("\\!", ""),
    ("\\,", ""),
    ("\\;", ""),
    ("\\ ", ""),
]


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (balanced braces), or None."""
    idx = text.rfind("\\boxed{")
    if idx < 0:
        return None
    depth = 0
    start = idx + len("\\boxed")
    for i in range(start, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def extract_answer(response: str, fallback: str = "none") -> str | None:
    """The final answer of a response: the last ``Answer:`` line, else the last ``\\boxed{}``; None if neither.

    A boxed answer inside the ``Answer:`` line (``Answer: \\boxed{3}``) is unwrapped. ``fallback="last_number"``
    takes the last number in the text when neither format is there (for small models that ignore the format).
    """
    if fallback not in ANSWER_FALLBACKS:
        raise ValueError(f"answer fallback must be one of {ANSWER_FALLBACKS}, got {fallback!r}")
    if not isinstance(response, str):
        return None
    matches = ANSWER_PATTERN.findall(response)
    ans: str | None = None
    if matches:
        ans = matches[-1].strip()
        inner = last_boxed(ans)
        if inner is not None:
            ans = inner
    else:
        ans = last_boxed(response)
    if ans is None and fallback == "last_number":
        numbers = LAST_NUMBER_PATTERN.findall(response)
        ans = numbers[-1] if numbers else None
    if ans is None:
        return None
    ans = ans.strip().rstrip(".").strip()
    # strip math delimiters around the whole answer
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(ans) >= len(left) + len(right) and ans.startswith(left) and ans.endswith(right):
            ans = ans[len(left) : len(ans) - len(right)].strip()
            break
    ans = ans.rstrip(".").strip()
    return ans or None


def normalize_key(answer: str) -> str:
    """Meaning-preserving canonical string of an extracted answer (bucket key)."""
    key = answer
    for before, after in _KEY_REWRITES:
        key = key.replace(before, after)
    key = re.sub(r"\s+", "", key)
    key = key.replace("$", "")
    return key.rstrip(".")
