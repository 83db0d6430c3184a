"""Final-answer extraction and the bucket key (pure functions, no I/O).

Extraction follows verl's DAPO scorer (``verl.utils.reward_score.math_dapo``): the last ``Answer: ...`` line wins
(Minerva format, case-insensitive); otherwise the content of the last ``\\boxed{...}``; otherwise ``None``.

Bucket key. Responses whose answers share a key are clustered (and graded) together without asking math-verify, so
the key may merge two answers only if math-verify parses them identically: then every ``verify`` against any other
answer, in either direction, gives the same verdict. The key is the answer verbatim (``normalize_key``), because no
rewrite of the text has that property for every answer. ``math_verify.parse("\\boxed{a}")`` (0.9, ``parser.py``)
reads more than the normalised box content:

- It normalises the content (``latex2sympy2_extended.math_normalization.normalize_latex``: ``r_left``/``r_right``
  drop ``\\left``/``\\right`` before a delimiter, ``to_replace_patterns`` turn ``\\dfrac``/``\\tfrac``/``\\cfrac`` into
  ``\\frac``, ``to_remove_regex`` drops ``\\displaystyle``, ``\\!`` and ``$``) and parses that string with latex2sympy.
  When that parse succeeds, the result depends on the normalised string only.
- When it fails, ``extract_target_from_pred`` falls back to regexes over the *raw* text (``lazy_latex_regex``,
  ``lazy_expr_regex``: a bare ``\\frac{1}{2}``, ``$...$``, a number after a space or ``=``, thousands separators,
  ``answer``-anchored windows of 50 characters), and if none of them parses, the answer is its normalised string alone,
  which ``verify`` compares as a string. A rewrite of the raw text can change that outcome even where
  ``normalize_latex`` itself applies it.

Each rewrite an earlier key applied, with an answer pair it merged that math-verify parses differently
(``tests/test_semantic_entropy_equivalence_tables.py`` keeps them as a regression table):

- whitespace removal: ``1 000`` (``1*0``: only a fallback regex reads thousands separators) vs ``1000``;
  ``2, 000`` (the set ``{0, 2}``) vs ``2,000`` (2000); ``10 \\%`` vs ``10\\%`` (both unparsed strings, so unequal);
  ``2 1/2`` (3/2) vs ``21/2``;
- ``\\,``, ``\\;``, ``\\ `` removal: ``1\\,000`` (``1*0``) vs ``1000``; ``\\!`` removal is one that ``normalize_latex``
  applies, with the raw-text caveat of ``\\displaystyle`` below;
- ``\\left``/``\\right`` removal: it also cuts ``\\leftarrow`` to ``arrow`` (``x \\rightarrow 0`` parses to 0,
  ``x \\leftarrow 0`` to a relation); math-verify removes them only before a delimiter;
- ``$`` removal: ``$28$ %`` is read as 28% by the inline-math regex, ``28 %`` stays an unparsed string;
- ``\\dfrac``/``\\tfrac`` -> ``\\frac`` and ``\\displaystyle`` removal, although ``normalize_latex`` applies them:
  ``\\dfrac{1}{2} \\foo`` does not parse and stays a string, ``\\frac{1}{2} \\foo`` is read as 1/2 by the
  bare-``\\frac`` fallback, so only the second verifies against the ground truth 0.5; likewise
  ``x=\\displaystyle5 \\foo`` (a string) vs ``x=5 \\foo`` (5, a number after ``=``);
- a trailing full stop: ``3.`` is an unparsed string, ``3`` is 3 (``extract_answer`` strips it before anyone, ours or
  the reference, sees the answer, so it is part of the extraction, not of the key).

So equal answers written differently (``\\dfrac{1}{2}`` and ``1/2``, ``[1, 2)`` and ``\\left[1,2\\right)``) are
separate buckets, merged by math-verify itself or by an exact shortcut (``shortcuts.certainly_equal``). There is no
option to merge more eagerly: nothing measured so far was worth a difference from math-verify.
"""

from __future__ import annotations

import re

ANSWER_PATTERN = re.compile(r"(?i)Answer\s*:\s*([^\n]+)")
LAST_NUMBER_PATTERN = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
ANSWER_FALLBACKS = ("none", "last_number")



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
    """Bucket key of an extracted answer: the answer itself (the module docstring says why no rewrite is safe)."""
    return answer
