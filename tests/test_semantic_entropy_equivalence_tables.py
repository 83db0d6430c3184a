"""Clusters and grades agree exactly with math-verify on answer-equivalence tables that other people wrote, and they
depend only on the multiset of answers, never on the order of the responses.

Tables:
- every (gold, pred) table of Math-Verify's own test suite: ``tests/data/math_verify_tables.json``, each table cited
  by repository, commit, path, line and test name (regenerate with ``tests/data/extract_math_verify_tables.py``);
- ``ISSUE_10_PAIRS``: answers that an earlier bucket key merged although math-verify parses them differently.

Each table string ``s`` becomes the response ``\\boxed{s}``; its answer ``a`` is what ``extract_answer`` makes of it.
The reference is math-verify itself, called here directly: ``P(a) = parse("\\boxed{a}")``, two responses share a
cluster exactly when their answers are connected by ``verify(P(a), P(b)) and verify(P(b), P(a))``, and response i is
correct exactly when ``verify(P(gold), P(a_i))``.
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

import pytest
from math_verify import parse, verify

from verl_ext.semantic_entropy import MathVerifyPool, extract_answer
from verl_ext.semantic_entropy.clustering import cluster_prompts

TABLES_FILE = Path(__file__).with_name("data") / "math_verify_tables.json"
MATH_VERIFY_TABLES = json.loads(TABLES_FILE.read_text())
SOURCE = MATH_VERIFY_TABLES["source"]

# (a, b): merged by the bucket key before issue 10, parsed differently by math-verify 0.9 (the issue lists them; the
# docstring of verl_ext/semantic_entropy/answers.py says which rewrite merged each)
ISSUE_10_PAIRS = [
    ("1 000", "1000"),
    ("1\\,000", "1000"),
    ("1\\;000", "1000"),
    ("1\\ 000", "1000"),
    ("2, 000", "2,000"),
    ("10 \\%", "10\\%"),
    ("2 1/2", "21/2"),
    ("x \\rightarrow 0", "x \\leftarrow 0"),
    ("$28$ %", "28 %"),
    ("\\dfrac{1}{2} \\foo", "\\frac{1}{2} \\foo"),
    ("\\tfrac{1}{2} \\foo", "\\frac{1}{2} \\foo"),
    ("x=\\displaystyle5 \\foo", "x=5 \\foo"),
]


def _tables() -> list[tuple[str, list[tuple[str, str]]]]:
    """(citation, [(gold, pred), ...]) for every table."""
    where = f"{SOURCE['repo']}@{SOURCE['commit'][:12]}"
    out = [
        (f"{where}:{t['path']}:{t['line']} {t['test']}", [(r[0], r[1]) for r in t["rows"]])
        for t in MATH_VERIFY_TABLES["tables"]
    ]
    return [*out, ("issue 10 (pairs an earlier bucket key merged)", ISSUE_10_PAIRS)]


TABLES = _tables()
TABLE_IDS = [citation.rsplit(" ", 1)[-1] if "@" in citation else "issue_10" for citation, _ in TABLES]


def response(s: str) -> str:
    return "\\boxed{" + s + "}"


def answer(s: str) -> str | None:
    return extract_answer(response(s))


def groups(rows: list[tuple[str, str]]) -> list[tuple[list[str], str | None]]:
    """Prompts of 8 responses (4 consecutive rows: equal and different answers mix), graded against the first gold."""
    strings = [s for pair in rows for s in pair]
    return [([response(s) for s in strings[k : k + 8]], answer(strings[k])) for k in range(0, len(strings), 8)]


# --------------------------------------------------------------------------------------- the reference: math-verify
@functools.cache
def mv_parse(a: str) -> list:
    return parse(a if "\\boxed" in a else "\\boxed{" + a + "}")


@functools.cache
def mv_verify(gold: str, target: str) -> bool:
    return bool(verify(mv_parse(gold), mv_parse(target)))


def reference(answers: list[str | None], gold: str | None) -> tuple[list[int], list[bool], list[bool]]:
    """(cluster ids numbered by first appearance, unparseable, correct) from math-verify over all pairs."""
    n = len(answers)
    usable = [a is not None and bool(mv_parse(a)) for a in answers]
    component = list(range(n))
    for i in range(n):
        for j in range(i + 1, n):
            if usable[i] and usable[j] and mv_verify(answers[i], answers[j]) and mv_verify(answers[j], answers[i]):
                old, new = component[j], component[i]
                component = [new if c == old else c for c in component]
    labels: dict[object, int] = {}
    ids = [labels.setdefault(component[i] if usable[i] else ("single", i), len(labels)) for i in range(n)]
    correct = [usable[i] and gold is not None and mv_verify(gold, answers[i]) for i in range(n)]
    return ids, [not u for u in usable], correct


@pytest.fixture(scope="module")
def pool():
    with MathVerifyPool(num_workers=2, timeout_s=5) as p:
        yield p


def _mismatches(batch: list[tuple[list[str], str | None]], pool, results=None) -> list[str]:
    """Every prompt of ``batch`` where our clusters or grades (``results``, else computed) differ from math-verify."""
    bad = []
    for (responses, gold), ours in zip(batch, results or cluster_prompts(batch, pool=pool)):
        answers = [extract_answer(r) for r in responses]
        ids, unparseable, correct = reference(answers, gold)
        if (ours.cluster_ids, ours.unparseable, ours.correct) != (ids, unparseable, correct):
            bad.append(f"{answers} gold={gold!r}: ours {ours.cluster_ids} {ours.correct}, math-verify {ids} {correct}")
    return bad


# ----------------------------------------------------------------------------------------------------------- tests
def test_the_tables_are_the_cited_ones():
    assert SOURCE["repo"] == "huggingface/Math-Verify" and len(SOURCE["commit"]) == 40
    assert len(TABLES) == 20 and sum(len(rows) for _, rows in TABLES) > 250
    assert all(answer(s) is not None for _, rows in TABLES for pair in rows for s in pair)


@pytest.mark.parametrize(("citation", "rows"), TABLES, ids=TABLE_IDS)
def test_pairs_cluster_and_grade_as_math_verify(pool, citation, rows):
    """Every row as a two-response prompt, in both orders, graded against the row's gold answer."""
    batch = []
    for gold, pred in rows:
        batch += [([response(gold), response(pred)], answer(gold)), ([response(pred), response(gold)], answer(gold))]
    assert not _mismatches(batch, pool), citation


@pytest.mark.parametrize(("citation", "rows"), TABLES, ids=TABLE_IDS)
def test_groups_cluster_and_grade_as_math_verify_in_any_order(pool, citation, rows):
    """Each group as math-verify clusters and grades it, and three random orders of it give the same clusters and
    grades, permuted (each permutation follows its group, so the worker that clusters the group has it memoised)."""
    rng = random.Random(citation)
    batch, orders = [], []
    for responses, gold in groups(rows):
        n = len(responses)
        for order in [list(range(n))] + [rng.sample(range(n), n) for _ in range(3)]:
            batch.append(([responses[k] for k in order], gold))
            orders.append(order)
    results = cluster_prompts(batch, pool=pool)
    assert not _mismatches(batch[::4], pool, results[::4]), citation
    for k in range(0, len(batch), 4):
        for order, permuted in zip(orders[k + 1 : k + 4], results[k + 1 : k + 4]):
            assert_permuted(results[k], permuted, order)


def test_issue_10_pairs_really_parse_differently():
    """The regression table is not vacuous: math-verify tells every pair apart by its parse."""
    for a, b in ISSUE_10_PAIRS:
        assert mv_parse(a) != mv_parse(b), (a, b)


def test_correct_is_each_responses_own_verdict(pool):
    """Symmetric equivalence is not grading: one cluster can hold a correct and an incorrect response."""
    responses = [response("\\dfrac{1}{2} \\foo"), response("\\frac{1}{2} \\foo")]
    for order in (responses, responses[::-1]):
        [res] = cluster_prompts([(order, "0.5")], pool=pool)
        assert res.cluster_ids == [0, 0]
        assert res.correct == [extract_answer(r) == "\\frac{1}{2} \\foo" for r in order]
    for order in (["10 \\%", "10\\%"], ["10\\%", "10 \\%"]):  # issue 10: once both wrong, once both right
        [res] = cluster_prompts([([response(s) for s in order], "10\\%")], pool=pool)
        assert res.cluster_ids == [0, 1] and res.correct == [s == "10\\%" for s in order]


def test_every_answer_math_verify_parses_verifies_against_itself():
    """Why identical answers may share a bucket unasked: a non-empty parse carries a non-empty string, compared too."""
    answers = sorted({answer(s) for _, rows in TABLES for pair in rows for s in pair})
    assert all(mv_verify(a, a) for a in answers if mv_parse(a))


def _canonical(ids: list[int]) -> list[int]:
    labels: dict[int, int] = {}
    return [labels.setdefault(i, len(labels)) for i in ids]


def assert_permuted(original, permuted, order: list[int]) -> None:
    """``permuted`` clusters the responses ``original`` clustered, in ``order``: same partition, same fields."""
    position = {k: n for n, k in enumerate(order)}
    back = [position[k] for k in range(len(order))]
    assert _canonical([permuted.cluster_ids[n] for n in back]) == original.cluster_ids, original.answers
    for field in ("answers", "correct", "unparseable"):
        assert [getattr(permuted, field)[n] for n in back] == getattr(original, field), (field, original.answers)


def test_permuting_the_responses_permutes_the_ids_and_nothing_else(pool):
    """Property test over random permutations of prompts with repeated answers (buckets of several responses) whose
    answers math-verify partly equates; issue 10's ``[10 \\%, 10\\%]`` was graded by whichever came first."""
    rng = random.Random(0)
    forms = [a for pair in ISSUE_10_PAIRS for a in pair]
    forms += ["10\\%", "10", "0.1", "1000", "1,000", "\\frac{1}{2}", "0.5"]
    for _ in range(60):
        answers = [rng.choice(forms) for _ in range(8)]
        gold = rng.choice(forms)
        orders = [rng.sample(range(8), 8) for _ in range(4)]
        prompts = [([response(a) for a in answers], gold)] + [([response(answers[k]) for k in o], gold) for o in orders]
        original, *permuted = cluster_prompts(prompts, pool=pool)
        for order, res in zip(orders, permuted):
            assert_permuted(original, res, order)
