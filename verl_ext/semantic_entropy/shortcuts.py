"""Cases where math-verify's verdict is known without running it (pure functions; sympy only).

Clustering must give exactly math-verify's partitions. Most of math-verify's cost is its ANTLR parser (1-30 ms an
answer) and proving that *different* answers differ (``x^2+10x+25`` vs ``x^2+12x+36``: ~5 ms of ``simplify``). Three
shortcuts, each exact for math-verify 0.9's ``parse`` and ``verify`` (in both directions):

1. ``plain_value`` reads what ``parse`` would return for plain answers: canonical integers (``plain_integer``; these
   need no parse at all, ``integer_parse``), decimals, integer fractions, intervals and finite sets of those. The
   parser then runs only if a pair still has to go to ``verify``. Pinned against ``math_verify.parse`` in the tests.
2. ``certainly_unequal`` settles pairs ``verify`` is certain to reject. A plain expression (``signature``) is built
   from ``Add``/``Mul``/``Pow`` with small rational exponents, rationals, floats, ``pi``/``E`` and (not at the top
   level) symbols: no percent (``UnevaluatedExpr``: math-verify equates 9% and 9), relation, tuple, matrix or
   function. For two of them ``verify`` succeeds only through structural equality, exact equality of rationals,
   equality of floats rounded to 6 places, a zero ``(a - b).evalf(chop=True)`` (|a - b| below ~1e-15) or a zero
   ``simplify(a - b)``; none can hold for different rationals, numbers more than 1e-5 (and 1e-6 relative) apart, or
   polynomials whose difference has a nonzero rational coefficient on a variable term. Intervals with constant
   endpoints differ when an end or its openness does; finite sets of constants when an element of one differs from
   every element of the other (math-verify compares an expression with a set as a singleton, an interval with an
   expression never, and equates only an open interval (a, b) with a pair {a, b}). Anything else returns False
   ("ask math-verify").
3. ``certainly_equal`` settles pairs ``verify`` is certain to accept: two plain values that are equal sympy objects
   (``[1, 2)`` and ``\\left[1,2\\right)``, ``\\frac{10}{2}`` and ``5``), so equal plain answers written differently need
   no parse either.
"""

from __future__ import annotations

import cmath
import re
from dataclasses import dataclass

import sympy as sp

_PLAIN_INTEGER = re.compile(r"0|-?[1-9]\d{0,17}")
_DECIMAL = re.compile(r"-?\d+\.\d+")
_FRACTION = re.compile(r"(-?)(?:\\[dt]?frac\{(\d{1,15})\}\{(\d{1,15})\}|(\d{1,15})/(\d{1,15}))")
_MAX_DECIMAL_DIGITS = 15  # math-verify parses these to a double-precision Float
_NUMBER = r"-?(?:\d+(?:\.\d+)?|\\[dt]?frac\{\d+\}\{\d+\}|\d+/\d+)"
_INTERVAL = re.compile(rf"([\[(])({_NUMBER}),({_NUMBER})([\])])")
_SET = re.compile(rf"\\\{{({_NUMBER}(?:,{_NUMBER})*)\\\}}")
_MAX_SIZE = 2000  # digits of the largest number the expression can expand to (keeps sympy's work small and bounded)
_MAX_SYMBOLS = 3
_MAX_SYMBOLIC_EXPONENT = 8  # of a power whose base has symbols: bounds the number of expanded terms
_MIN_ABSOLUTE_GAP = 1e-5  # math-verify rounds floats to 6 decimals, and chops |x| < ~1e-15 in evalf
_MIN_RELATIVE_GAP = 1e-6  # far above the 15 significant digits of its numeric comparisons
_MIN_COEFFICIENT = 1e-10


def plain_integer(answer: str) -> int | None:
    """The value of an answer written as a canonical integer (no sign on 0, no leading zeros, <= 18 digits)."""
    return int(answer) if _PLAIN_INTEGER.fullmatch(answer) else None


def integer_parse(value: int, answer: str) -> list:
    """What ``math_verify.parse`` returns for a ``plain_integer`` answer."""
    return [sp.Integer(value), answer]


def plain_number(answer: str) -> sp.Rational | sp.Float | None:
    """The value math-verify parses a plain number to, without its parser: a canonical integer, a decimal
    (``-0.75``: a double-precision Float) or a fraction of integers (``\\frac{3}{4}``, ``\\dfrac``, ``3/4``)."""
    value = plain_integer(answer)
    if value is not None:
        return sp.Integer(value)
    if _DECIMAL.fullmatch(answer):
        return sp.Float(float(answer)) if sum(c.isdigit() for c in answer) <= _MAX_DECIMAL_DIGITS else None
    match = _FRACTION.fullmatch(answer)
    if match:
        sign, p1, q1, p2, q2 = match.groups()
        p, q = int(p1 or p2), int(q1 or q2)
        return sp.Rational(-p if sign else p, q) if q else None
    return None


@dataclass(frozen=True)
class Signature:
    """Exact comparable form of a plain answer.

    ``kind="expr"``: ``expanded`` and, when constant, its numeric ``value``; ``"interval"``: ``parts`` are the
    constant endpoints and ``open`` the (left, right) openness; ``"set"``: ``parts`` are the constant elements of a
    finite set.
    """

    kind: str
    expanded: sp.Expr | None = None
    value: complex | None = None
    parts: tuple[Signature, ...] = ()
    open: tuple[bool, bool] = (False, False)


def plain_value(answer: str) -> sp.Basic | None:
    """What math-verify parses a plain answer to, without its parser (its ANTLR grammar takes ~30 ms on an interval):
    a ``plain_number``, an interval of two increasing plain numbers (``[1, \\frac{5}{2})``), or a finite set of plain
    numbers (``\\{-1, 2.5\\}``); None for anything else."""
    number = plain_number(answer)
    if number is not None:
        return number
    compact = answer.replace("\\left", "").replace("\\right", "").replace(" ", "")
    match = _INTERVAL.fullmatch(compact)
    if match:
        left, start, end, right = match.groups()
        start, end = plain_number(start), plain_number(end)
        if start is None or end is None or not start < end:  # math-verify makes (3,3) a tuple and [5,3) empty
            return None
        return sp.Interval(start, end, left == "(", right == ")")
    match = _SET.fullmatch(compact)
    if match:
        elements = [plain_number(e) for e in match.group(1).split(",")]
        return None if None in elements else sp.FiniteSet(*elements)
    return None


def _size(node) -> int | None:
    """Rough digit count of what ``node`` expands to, or None when ``node`` is not plain."""
    if isinstance(node, sp.Rational):  # Integer included
        return len(str(abs(node.p))) + len(str(node.q))
    if isinstance(node, sp.Float):
        return 20
    if isinstance(node, sp.Symbol) or node in (sp.pi, sp.E):
        return 1
    if isinstance(node, (sp.Add, sp.Mul)):
        sizes = [_size(a) for a in node.args]
        return None if None in sizes else sum(sizes)
    if isinstance(node, sp.Pow) and isinstance(node.exp, sp.Rational):
        base = _size(node.base)
        power = max(abs(node.exp.p), node.exp.q)
        if base is None or (node.base.free_symbols and power > _MAX_SYMBOLIC_EXPONENT):
            return None
        return base * power
    return None


def _expr_signature(expr) -> Signature | None:
    if not isinstance(expr, sp.Expr) or len(expr.free_symbols) > _MAX_SYMBOLS:
        return None
    size = _size(expr)
    if size is None or size > _MAX_SIZE:
        return None
    try:
        expanded = sp.expand(expr)
        if expanded.free_symbols:
            return Signature("expr", expanded) if expanded.is_polynomial(*expanded.free_symbols) else None
        value = complex(sp.N(expanded, 30))
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        return None
    return Signature("expr", expanded, value) if cmath.isfinite(value) else None


def signature(parsed: list) -> Signature | None:
    """Signature of a ``math_verify.parse`` result, or None when it is not a plain answer."""
    if len(parsed) != 2 or not isinstance(parsed[1], str):
        return None
    obj = parsed[0]
    if isinstance(obj, sp.Interval):
        ends = (_expr_signature(obj.start), _expr_signature(obj.end))
        if any(e is None or e.value is None for e in ends):
            return None
        return Signature("interval", parts=ends, open=(bool(obj.left_open), bool(obj.right_open)))
    if isinstance(obj, sp.FiniteSet):  # of constants: symbols inside sets meet math-verify's symbol rules (e vs E)
        elements = tuple(_expr_signature(e) for e in obj.args)
        if not elements or any(e is None or e.value is None for e in elements):
            return None
        return Signature("set", parts=elements)
    if isinstance(obj, sp.Symbol):  # top-level symbols have their own rules in math-verify (e vs E, abc vs a*b*c)
        return None
    return _expr_signature(obj)


def _has_rational_variable_term(poly_expr: sp.Expr) -> bool:
    """A clearly nonzero rational coefficient on a non-constant monomial: the polynomial is not identically zero."""
    poly = sp.Poly(poly_expr, *sorted(poly_expr.free_symbols, key=str))
    return any(
        any(m) and isinstance(c, sp.Rational) and abs(c) > _MIN_COEFFICIENT for m, c in zip(poly.monoms(), poly.coeffs())
    )


def _exprs_unequal(a: Signature, b: Signature) -> bool:
    if isinstance(a.expanded, sp.Rational) and isinstance(b.expanded, sp.Rational):
        return a.expanded != b.expanded  # exact
    if a.value is not None and b.value is not None:
        gap = abs(a.value - b.value)
        return gap > max(_MIN_ABSOLUTE_GAP, _MIN_RELATIVE_GAP * max(abs(a.value), abs(b.value)))
    diff = sp.expand(a.expanded - b.expanded)
    if diff.free_symbols:
        return _has_rational_variable_term(diff)
    return abs(complex(sp.N(diff, 30))) > _MIN_ABSOLUTE_GAP  # polynomials a constant apart


def _sets_unequal(a: tuple[Signature, ...], b: tuple[Signature, ...]) -> bool:
    """Some element of one set differs from every element of the other."""

    def lonely(xs, ys):
        return any(all(_exprs_unequal(x, y) for y in ys) for x in xs)

    return lonely(a, b) or lonely(b, a)


def certainly_equal(a: sp.Basic | None, b: sp.Basic | None) -> bool:
    """True only when ``verify`` is certain to accept the pair in both directions: two ``plain_value`` readings that are
    equal sympy objects. ``verify`` compares every parsed element of one answer with every element of the other and
    accepts if any pair matches; for the two values it calls ``sympy_expr_eq``, whose rewrites (assignments, equations,
    relations as sets) leave numbers, intervals and finite sets alone and whose first test, ``sympy_str_eq``, is
    ``gold == pred`` (it raises only for nan and zoo, which are never plain values)."""
    return a is not None and b is not None and bool(a == b)


def certainly_unequal(a: Signature | None, b: Signature | None) -> bool:
    """True only when ``verify`` is certain to reject the pair in both directions; False means "ask math-verify"."""
    if a is None or b is None:
        return False
    kinds = {a.kind, b.kind}
    if kinds == {"expr"}:
        return _exprs_unequal(a, b)
    if kinds == {"interval"}:
        return a.open != b.open or any(_exprs_unequal(x, y) for x, y in zip(a.parts, b.parts))
    if kinds == {"interval", "expr"}:  # math-verify compares {expr} with the (non-degenerate) interval
        return True
    if kinds == {"interval", "set"}:  # except an open interval (a, b) vs the pair {a, b}, which math-verify equates
        interval, finite = (a, b) if a.kind == "interval" else (b, a)
        return len(finite.parts) != 2 or not all(interval.open)
    # set vs set, or set vs expr (math-verify compares an expression as the singleton set)
    return _sets_unequal(a.parts or (a,), b.parts or (b,))
