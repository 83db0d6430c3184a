"""Answer extraction, equivalence clustering (bucket + symmetric math-verify) and its hang-proof worker pool."""

from __future__ import annotations

import random
import time

import pytest

from verl_ext.semantic_entropy import MathVerifyPool, cluster_answers, extract_answer
from verl_ext.semantic_entropy.clustering import cluster_prompts, naive_cluster_answers


@pytest.fixture(scope="module")
def pool():
    with MathVerifyPool(num_workers=2, timeout_s=5) as p:
        yield p


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("reasoning...\nAnswer: 42", "42"),
        ("answer: $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("Answer: 1\nmore\nAnswer: 7", "7"),  # the last Answer: line wins
        ("so \\boxed{3} then \\boxed{\\frac{a}{b}}", "\\frac{a}{b}"),  # the last box, balanced braces
        ("Answer: \\boxed{5}", "5"),
        ("Answer: see \\boxed{4}", "4"),  # a box inside the Answer: line is unwrapped
        ("no final answer here", None),
        ("\\boxed{unclosed", None),
        ("Answer:   ", None),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("6 times 7 equals 42.", "42"),
        ("so x = -3.5 and y = 2", "2"),
        ("1/2 + 1/4 = 3/4", "3/4"),
        ("Answer: 9 (not 10)", "9 (not 10)"),  # the formats still win over the fallback
        ("\\boxed{7} because 8", "7"),
        ("no digits at all", None),
    ],
)
def test_extract_answer_last_number_fallback(response, expected):
    assert extract_answer(response, fallback="last_number") == expected


def test_extract_answer_rejects_an_unknown_fallback():
    with pytest.raises(ValueError, match="fallback"):
        extract_answer("42", fallback="first_number")


def test_fallback_reaches_the_clustering(pool):
    responses = ["it is 42", "I think 42", "maybe 41", "no idea"]
    strict = cluster_prompts([(responses, "42")], pool=pool)[0]
    assert strict.unparseable == [True] * 4
    loose = cluster_prompts([(responses, "42")], pool=pool, answer_fallback="last_number")[0]
    assert loose.cluster_ids == [0, 0, 1, 2] and loose.correct == [True, True, False, False]


# (answer a, answer b, equivalent?) — each wrapped alternately as `Answer:` lines and `\boxed{}`
EQUIVALENCE_TABLE = [
    ("\\frac{1}{2}", "0.5", True),
    ("1/2", "\\dfrac{1}{2}", True),
    ("\\frac{3}{4}", "0.75", True),
    ("0.5", "0.55", False),
    ("[1,2)", "[1, 2)", True),
    ("(1,2)", "[1,2]", False),
    ("(0,\\infty)", "(0, \\infty)", True),
    ("\\{1,2,3\\}", "\\{3,2,1\\}", True),
    ("\\{1,2\\}", "\\{1,3\\}", False),
    ("x^2+2x+1", "(x+1)^2", True),
    ("2x", "x \\cdot 2", True),
    ("x^2", "x^3", False),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("3", "3.0", True),
    ("7", "8", False),
    ("x=3", "3", True),
]


@pytest.mark.parametrize(("a", "b", "equivalent"), EQUIVALENCE_TABLE)
def test_equivalence_table(pool, a, b, equivalent):
    for ra, rb in [(f"Answer: {a}", f"\\boxed{{{b}}}"), (f"\\boxed{{{a}}}", f"Answer: ${b}$"), (f"Answer: {a}", f"Answer: {b}")]:
        ids = cluster_answers([ra, rb], pool=pool)
        assert (ids[0] == ids[1]) is equivalent, (ra, rb, ids)
        ids_rev = cluster_answers([rb, ra], pool=pool)  # symmetric
        assert (ids_rev[0] == ids_rev[1]) is equivalent, (rb, ra, ids_rev)


def test_unparseable_modes(pool):
    responses = ["blah", "Answer: 2", "\\boxed{}", "no answer", "\\boxed{2.0}", "Answer: \\frac{4}{2}"]
    assert cluster_answers(responses, pool=pool) == [0, 1, 2, 3, 1, 1]
    assert cluster_answers(responses, unparseable="shared", pool=pool) == [0, 1, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="unparseable"):
        cluster_answers(responses, unparseable="drop", pool=pool)


def test_ids_are_canonical_and_default_pool():
    # the default (process-wide) pool; ids numbered by first appearance
    assert cluster_answers(["Answer: 5", "Answer: 1", "\\boxed{5}", "Answer: 1.0"]) == [0, 1, 0, 1]
    assert cluster_answers([]) == []


def test_correctness_against_ground_truth(pool):
    [res] = cluster_prompts([(["Answer: 0.5", "\\boxed{\\frac{1}{2}}", "Answer: 2", "junk"], "\\frac12")], pool=pool)
    assert res.correct == [True, True, False, False]
    assert res.unparseable == [False, False, False, True]
    assert res.answers[:3] == ["0.5", "\\frac{1}{2}", "2"]


def _synthetic(rng: random.Random, n_prompts: int) -> list[list[str]]:
    forms = [["\\frac{1}{2}", "0.5", "1/2"], ["3", "3.0", "\\frac{6}{2}"], ["[1,2)", "[1, 2)"], ["x^2+2x+1", "(x+1)^2"], ["7"], ["\\{1,2\\}", "\\{2,1\\}"]]
    out = []
    for _ in range(n_prompts):
        resp = []
        for _ in range(8):
            r = rng.random()
            if r < 0.1:
                resp.append("I could not finish")
            else:
                f = rng.choice(rng.choice(forms))
                resp.append(f"Answer: {f}" if rng.random() < 0.5 else f"so \\boxed{{{f}}}")
        out.append(resp)
    return out


def test_partitions_identical_to_naive_pairwise(pool):
    rng = random.Random(0)
    batch = _synthetic(rng, 60)
    ours = cluster_prompts([(r, None) for r in batch], pool=pool)
    for responses, res in zip(batch, ours):
        assert res.cluster_ids == naive_cluster_answers(responses)


def test_pathological_answer_cannot_hang():
    # a tower of powers makes sympy's comparison explode; math-verify's own signal timeout works in the worker's
    # main thread (and the pool's hard per-task deadline backs it up)
    monster = "Answer: 9^{9^{9^{9^{9^{9^{9}}}}}}"
    with MathVerifyPool(num_workers=1, timeout_s=1) as p:
        t0 = time.time()
        ids = cluster_answers([monster, "Answer: 9^{9^{9^{9^{9^{9^{8}}}}}}", "Answer: 1", "Answer: 1.0"], pool=p)
        assert time.time() - t0 < 30
        assert ids[0] != ids[1] and ids[2] == ids[3]
        # the pool still works afterwards
        assert cluster_answers(["Answer: 2", "\\boxed{2}"], pool=p) == [0, 0]


def test_in_process_mode():
    p = MathVerifyPool(num_workers=0)
    assert cluster_answers(["Answer: 1/2", "Answer: 0.5", "x"], pool=p) == [0, 0, 1]
