"""The clustering's exact shortcuts agree with math-verify: a pair is only ever settled without it when math-verify
would reject it both ways, and plain integers parse exactly as math-verify parses them."""

from __future__ import annotations

import random
import time

import pytest
import sympy as sp
from math_verify import parse, verify

from verl_ext.semantic_entropy.clustering import _signature, cluster_prompts, naive_cluster_answers
from verl_ext.semantic_entropy.shortcuts import (
    certainly_equal,
    certainly_unequal,
    integer_parse,
    plain_integer,
    plain_value,
    signature,
)


# math-verify's reference answers, not its speed: its 5 s default timeouts fire on a loaded CI machine and turn a parse
# into [] and a comparison into False (seen: a four-element set under two parallel test workers)
REFERENCE_TIMEOUT_S = 120


def _parse(answer: str) -> list:
    return parse("\\boxed{" + answer + "}", parsing_timeout=REFERENCE_TIMEOUT_S)


def _verify(gold: list, target: list) -> bool:
    return verify(gold, target, timeout_seconds=REFERENCE_TIMEOUT_S)


def _sig(answer: str):
    return _signature(answer, 5.0)  # the clustering's own path: plain numbers skip the parser


def _mv_equal_either_way(a: str, b: str) -> bool:
    pa, pb = _parse(a), _parse(b)
    return bool(_verify(pa, pb) or _verify(pb, pa))


def _mv_equal_both_ways(a: str, b: str) -> bool:
    pa, pb = _parse(a), _parse(b)
    return bool(_verify(pa, pb) and _verify(pb, pa))


@pytest.mark.parametrize("answer", ["0", "7", "-7", "42", "100000", "-99999", "123456789012345678"])
def test_plain_integers_parse_exactly_as_math_verify(answer):
    assert plain_integer(answer) == int(answer)
    assert integer_parse(int(answer), answer) == _parse(answer)


@pytest.mark.parametrize("answer", ["007", "-0", "+5", "1,000", "1e5", "5.0", "", " 5", "1234567890123456789", "x"])
def test_non_canonical_integers_take_the_parser(answer):
    assert plain_integer(answer) is None


def _random_plain_number(rng: random.Random) -> str:
    p, q = rng.randint(0, 10 ** rng.randint(1, 6)), rng.randint(1, 10 ** rng.randint(1, 4))
    sign = rng.choice(["", "-"])
    return rng.choice(
        [
            f"{sign}{p}",
            f"{sign}{p}.{rng.randint(0, 10**6):0{rng.randint(1, 6)}d}",
            f"{sign}0.{rng.randint(0, 10**9)}",
            f"{sign}\\frac{{{p}}}{{{q}}}",
            f"{sign}\\dfrac{{{p}}}{{{q}}}",
            f"{sign}{p}/{q}",
        ]
    )


def _random_plain_value(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.6:
        return _random_plain_number(rng)
    if kind < 0.8:
        return rng.choice("[(") + _random_plain_number(rng) + rng.choice([",", ", "]) + _random_plain_number(rng) + rng.choice("])")
    return "\\{" + ",".join(_random_plain_number(rng) for _ in range(rng.randint(1, 4))) + "\\}"


def test_plain_values_are_read_as_math_verify_parses_them():
    rng = random.Random(0)
    fixed = {"-0", "-0.0", "007.5", "\\frac{10}{2}", "6/3", "[1,2)", "\\left[1,2\\right)", "(3,3)", "[5,3)", "\\{1,1\\}"}
    read = 0
    for answer in {_random_plain_value(rng) for _ in range(400)} | fixed:
        value = plain_value(answer)
        if value is None:  # outside the fast path (-0, long decimals, empty or degenerate intervals): math-verify parses
            continue
        read += 1
        parsed = _parse(answer)
        assert parsed, answer  # the fast path only takes answers math-verify can parse
        assert sp.srepr(value) == sp.srepr(parsed[0]), answer
        assert signature([value, answer]) == signature(parsed), answer
    assert read > 250


@pytest.mark.parametrize(
    "answer", ["1.", ".5", "1/0", "\\frac{1}{0}", "1/2/3", "\\frac12", "0.1234567890123456", "1e3", "(3,3)", "[5,3)", "\\{x,1\\}"]
)
def test_other_answers_take_the_parser(answer):
    assert plain_value(answer) is None


# pairs the shortcut must settle (and math-verify indeed rejects both ways)
CERTIFIED = [
    ("7", "8"),
    ("-3", "3"),
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("\\frac{1}{2}", "0.6"),
    ("0.5", "0.55"),
    ("3.0", "4"),
    ("\\pi", "3.14"),
    ("2\\sqrt{2}", "\\sqrt{7}"),
    ("x^2+10x+25", "x^2+12x+36"),
    ("(x+5)^2", "x^2+10x+26"),
    ("x^2", "x^3"),
    ("x^2", "y^2"),
    ("2x", "5"),
    ("[1,2)", "[1,2]"),
    ("[1,3)", "[1,2)"),
    ("[1,2)", "1"),
    ("\\{1,2\\}", "\\{1,3\\}"),
    ("\\{1,2\\}", "1"),
    ("\\{1,2,3\\}", "[1,3]"),
    ("100000", "100001"),
]

# pairs math-verify equates (or has a special rule for): the shortcut must never settle them
NOT_CERTIFIED = [
    ("\\frac{1}{3}", "0.333333", True),  # float rounding to 6 places
    ("3", "3.0", True),
    ("2.0000001", "2.0", True),
    ("1.0000001", "1.0000002", True),
    ("x=3", "3", True),  # relations unwrap
    ("(1,2)", "\\{1,2\\}", True),  # open interval vs pair
    ("\\{5\\}", "5", True),  # singleton set vs element
    ("0.5x", "\\frac{x}{2}", True),
    ("\\sqrt{2}+10^{-20}", "\\sqrt{2}", True),  # a difference below evalf's chop threshold
    ("10^{-30}\\pi", "2\\cdot 10^{-30}\\pi", True),
    ("(x+1)^2", "x^2+2x+1", True),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("\\text{abc}", "abc", True),  # symbol concatenation rule
    ("0.333333x", "\\frac{x}{3}", False),  # float coefficients are left to math-verify
    ("(0,\\infty)", "(0,5)", False),  # infinite endpoints are left to math-verify
]


@pytest.mark.parametrize(("a", "b"), CERTIFIED)
def test_certified_pairs_are_rejected_by_math_verify(a, b):
    assert certainly_unequal(_sig(a), _sig(b)) and certainly_unequal(_sig(b), _sig(a))
    assert not _mv_equal_either_way(a, b)


@pytest.mark.parametrize(("a", "b", "mv_equal"), NOT_CERTIFIED)
def test_pairs_math_verify_may_equate_are_left_to_it(a, b, mv_equal):
    assert not certainly_unequal(_sig(a), _sig(b)) and not certainly_unequal(_sig(b), _sig(a))
    assert _mv_equal_either_way(a, b) is mv_equal


# equal plain values written differently: settled as equal without a parse (and math-verify accepts them both ways)
CERTAINLY_EQUAL = [
    ("[1, 2)", "\\left[1,2\\right)"),
    ("\\frac{10}{2}", "5"),
    ("1/2", "\\dfrac{1}{2}"),
    ("\\{1,2\\}", "\\{2, 1\\}"),
    ("-0.50", "-0.5"),
    ("(0.5, 3)", "(0.50,3)"),
]

# equal to math-verify but not the same plain value (or not plain at all): left to math-verify
NOT_CERTAINLY_EQUAL = [
    ("5", "5.0"),  # Integer vs Float: math-verify compares them numerically
    ("0.5", "1/2"),
    ("1,000", "1000"),
    ("\\{5\\}", "5"),
    ("(1,2)", "\\{1,2\\}"),
]


@pytest.mark.parametrize(("a", "b"), CERTAINLY_EQUAL)
def test_certainly_equal_pairs_are_accepted_by_math_verify(a, b):
    assert certainly_equal(plain_value(a), plain_value(b)) and certainly_equal(plain_value(b), plain_value(a))
    assert _mv_equal_both_ways(a, b)


@pytest.mark.parametrize(("a", "b"), NOT_CERTAINLY_EQUAL)
def test_pairs_that_are_not_the_same_plain_value_are_left_to_math_verify(a, b):
    assert not certainly_equal(plain_value(a), plain_value(b))
    assert _mv_equal_both_ways(a, b) or a == "1,000"  # "1,000" parses to the set {0, 1}


def test_random_plain_values_certified_equal_are_equal_to_math_verify():
    rng = random.Random(3)

    def written(p: int, q: int) -> str:
        forms = [f"\\frac{{{p}}}{{{q}}}", f"\\dfrac{{{p}}}{{{q}}}", f"{p}/{q}", f"{p * 3}/{q * 3}"]
        return rng.choice(forms + [str(p // q)] if p % q == 0 else forms)

    def value() -> str:
        p, q = rng.randint(-4, 4), rng.randint(1, 3)
        kind = rng.random()
        if kind < 0.5:
            return written(p, q)
        if kind < 0.8:
            return rng.choice("[(") + written(p, q) + rng.choice([",", ", "]) + written(p + 5, q) + rng.choice("])")
        return "\\{" + rng.choice([",", ", "]).join(written(rng.randint(-2, 2), 1) for _ in range(2)) + "\\}"

    answers = sorted({value() for _ in range(120)})
    certified = 0
    for _ in range(3000):
        a, b = rng.sample(answers, 2)
        if certainly_equal(plain_value(a), plain_value(b)):
            certified += 1
            assert _mv_equal_both_ways(a, b), (a, b)
    assert certified > 20  # 30 with this seed


def _random_answer(rng: random.Random) -> str:
    v = rng.randint(-12, 12)
    w = rng.randint(1, 12)
    return rng.choice(
        [
            str(v),
            f"{v}.0",
            f"{v / w:.6f}",
            f"{v / w:.3f}",
            f"\\frac{{{v}}}{{{w}}}",
            f"{v}/{w}",
            f"\\sqrt{{{w}}}",
            f"{v}\\sqrt{{{w}}}",
            f"{v}\\pi",
            f"\\frac{{{v}\\pi}}{{{w}}}",
            f"x^2+{w}x+{v}",
            f"(x+{v})^2",
            f"{v}x",
            f"{w}y-{v}",
            f"[{v},{v + w})",
            f"({v},{v + w})",
            f"\\{{{v},{w}\\}}",
            f"\\{{{v}\\}}",
            f"{v}x+0.5",
            f"10^{{-{w + 20}}}",
        ]
    )


def test_random_pairs_never_contradict_math_verify():
    rng = random.Random(0)
    pool = sorted({_random_answer(rng) for _ in range(400)})
    signatures = {a: _sig(a) for a in pool}
    certified = 0
    for _ in range(1500):
        a, b = rng.sample(pool, 2)
        if certainly_unequal(signatures[a], signatures[b]):
            certified += 1
            assert not _mv_equal_either_way(a, b), (a, b)
    assert certified > 500  # the shortcut does settle most pairs of different answers


@pytest.mark.parametrize("answer", ["9^{9^{9^{9}}}", "(a+b+c+d)^{50}", "(x+1)^{100}", "2^{10^{10}}", "10^{1000}"])
def test_pathological_answers_get_no_signature_quickly(answer):
    parsed = _parse(answer)
    t0 = time.perf_counter()
    assert signature(parsed) is None
    assert time.perf_counter() - t0 < 1.0


def test_dapo_like_answers_cluster_and_grade_exactly_as_math_verify():
    rng = random.Random(1)
    batch = []
    for _ in range(40):
        g = rng.randint(0, 500)
        forms = [str(g), str(g), str(g + 1), str(rng.randint(0, 999)), f"{g}.0", f"\\frac{{{2 * g}}}{{2}}", f"{g}\\pi", "no idea"]
        batch.append(([f"Answer: {rng.choice(forms)}" for _ in range(8)], str(g)))
    ours = cluster_prompts(batch)
    for (responses, gt), res in zip(batch, ours):
        assert res.cluster_ids == naive_cluster_answers(responses)
        expected = [a is not None and bool(_parse(a)) and bool(_verify(_parse(gt), _parse(a))) for a in res.answers]
        assert res.correct == expected
