"""Answer clustering: ours (buckets of identical answers, exact shortcuts for plain answers, symmetric math-verify
between distinct answers, in worker processes) vs naive symmetric math-verify over all response pairs, on the same
1,000 prompts x 8 synthetic answers. Target: >= 10x faster with identical partitions on the DAPO-like set (the paper's
training data); the diverse set shows how far that carries to answers math-verify has to parse.

Two naive baselines, both pure math-verify: its documented call per pair, ``verify(parse(a), parse(b))`` both ways
(what "pairwise math-verify" means literally), and a stronger one that parses each response once first.

    python -m bench.bench_clustering [--prompts 1000] [--workers 2] [--write]   (--write updates bench/RESULTS.md)
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time

from bench.results import write_section
from verl_ext.semantic_entropy.clustering import MathVerifyPool, cluster_prompts, naive_cluster_answers


def families(v: int) -> list[list[str]]:
    """Surface forms of values derived from a per-prompt parameter v (the first is the one a model usually writes)."""
    return [
        [f"{v}", f"{v}.0", f"\\frac{{{2 * v}}}{{2}}"],
        [f"\\frac{{1}}{{{v + 1}}}", f"1/{v + 1}", f"\\dfrac{{1}}{{{v + 1}}}"],
        [f"[{v},{v + 2})", f"[{v}, {v + 2})", f"\\left[{v},{v + 2}\\right)"],
        [f"x^2+{2 * v}x+{v * v}", f"(x+{v})^2"],
        [f"\\sqrt{{{4 * v}}}", f"2\\sqrt{{{v}}}"],
        [f"\\{{{v},{v + 1}\\}}", f"\\{{{v + 1},{v}\\}}"],
        [f"{v}\\pi", f"{v} \\pi"],
        [f"-{v}", f"-{v}.0"],
    ]


def synthetic(n_prompts: int, m: int = 8, seed: int = 0, v_max: int = 300) -> list[list[str]]:
    """Model-like answer sets: per prompt a value family and parameter v in 1..300 (so answers recur across prompts
    only as much as small numbers do in real data); a majority value, wrong values (v +- 1, other families),
    responses without an answer; the usual surface form most of the time, an equivalent rewrite sometimes;
    `Answer:` lines and `\\boxed{}` mixed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_prompts):
        v = rng.randint(1, v_max)
        fam_id = rng.randrange(8)
        resp = []
        for _ in range(m):
            r = rng.random()
            if r < 0.12:
                resp.append(rng.choice(["I am not sure.", "Answer:", "the result is large", "\\boxed{}"]))
                continue
            if r < 0.7:
                fam = families(v)[fam_id]
            elif r < 0.85:
                fam = families(v + rng.choice([-1, 1]))[fam_id]
            else:
                fam = families(v)[rng.randrange(8)]
            form = fam[0] if rng.random() < 0.75 else rng.choice(fam)
            resp.append(f"... so Answer: {form}" if rng.random() < 0.5 else f"... thus \\boxed{{{form}}}.")
        out.append(resp)
    return out


def dapo_like(n_prompts: int, m: int = 8, seed: int = 0) -> list[list[str]]:
    """DAPO-Math-17k's ground truths are all integers: per prompt an integer g; most responses give g, some a nearby
    or unrelated integer, a few rewrite g (``g.0``, ``\\frac{2g}{2}``) or give a non-integer wrong answer, some none."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_prompts):
        g = rng.choice([rng.randint(0, 20), rng.randint(21, 1000), rng.randint(1001, 100000)])
        resp = []
        for _ in range(m):
            r = rng.random()
            if r < 0.08:
                resp.append(rng.choice(["I am not sure.", "Answer:", "the result is large"]))
                continue
            if r < 0.6:
                form = str(g)
            elif r < 0.75:
                form = str(g + rng.choice([-2, -1, 1, 2, 10]))
            elif r < 0.85:
                form = str(rng.randint(0, 2 * g + 10))
            elif r < 0.92:
                form = rng.choice([f"{g}.0", f"\\frac{{{2 * g}}}{{2}}", f"{g}.00"])
            else:
                form = rng.choice([f"\\frac{{{g}}}{{3}}", f"\\sqrt{{{g}}}", f"{g}\\pi", f"{g / 7:.3f}"])
            resp.append(f"... so Answer: {form}" if rng.random() < 0.5 else f"... thus \\boxed{{{form}}}.")
        out.append(resp)
    return out


def diverse_families(v: int) -> list[list[str]]:
    """Answers a model writes for one value in forms math-verify must parse: thousands separators, percents, units,
    sets, expressions, relations and tuples (the first form is the usual one)."""
    big, r = 1000 * v + 7 * v % 1000, (7 * v) % 1000
    return [
        [f"{big}", f"{v},{r:03d}", f"{v}\\,{r:03d}", f"{v}{{,}}{r:03d}", f"{v} {r:03d}"],
        [f"{v}\\%", f"{v}%", f"{v} \\%", f"{v} percent", f"{v}"],
        [f"{v}\\text{{ cm}}", f"{v} cm", f"{v}\\,\\text{{cm}}", f"{v}", f"{v}\\text{{cm}}^2"],
        [f"\\${v}", f"{v} dollars", f"{v}", f"\\${v}.00"],
        [f"\\{{{v},{v + 1},{v + 3}\\}}", f"\\{{{v + 3}, {v}, {v + 1}\\}}", f"{v}, {v + 1}, {v + 3}"],
        [f"{v}x+{v + 1}", f"{v + 1}+{v}x", f"x\\cdot {v}+{v + 1}", f"{v}x + {v + 1}"],
        [f"\\frac{{{v}}}{{x}}", f"{v}/x", f"{v}x^{{-1}}"],
        [f"\\sqrt{{{v}}}\\pi", f"\\pi\\sqrt{{{v}}}", f"\\pi \\sqrt {v}"],
        [f"x={v}", f"{v}", f"x = {v}"],
        [f"({v}, {v + 1})", f"({v},{v + 1})", f"\\left({v}, {v + 1}\\right)"],
    ]


def diverse(n_prompts: int, m: int = 8, seed: int = 0, v_max: int = 300) -> list[list[str]]:
    """Like ``synthetic`` but over ``diverse_families``: per prompt one family and a value v in 1..300; the usual form
    of v most of the time, other forms of v, forms of v +- 1, and responses without an answer."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_prompts):
        v = rng.randint(2, v_max)
        fam_id = rng.randrange(len(diverse_families(v)))
        resp = []
        for _ in range(m):
            r = rng.random()
            if r < 0.1:
                resp.append(rng.choice(["I am not sure.", "Answer:", "\\boxed{}"]))
                continue
            fam = diverse_families(v if r < 0.8 else v + rng.choice([-1, 1]))[fam_id]
            form = fam[0] if rng.random() < 0.6 else rng.choice(fam)
            resp.append(f"... so Answer: {form}" if rng.random() < 0.5 else f"... thus \\boxed{{{form}}}.")
        out.append(resp)
    return out


def run_case(name: str, data: list[list[str]], workers: int) -> tuple[list[str], float]:
    from verl_ext.semantic_entropy.answers import extract_answer, normalize_key

    timings = {}
    for cache in (False, True):
        with MathVerifyPool(num_workers=workers, timeout_s=5, cache=cache) as pool:
            pool.wait_ready()  # worker start-up (spawn + imports) is not part of the measurement
            t0 = time.perf_counter()
            res = cluster_prompts([(r, None) for r in data], pool=pool)
            timings[cache] = (time.perf_counter() - t0, res)
    t0 = time.perf_counter()
    naive = [naive_cluster_answers(r) for r in data]
    t_naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    literal = [naive_cluster_answers(r, parse_once=False) for r in data]
    t_literal = time.perf_counter() - t0
    assert literal == naive, "the two naive baselines disagree"

    def same(res):
        bad = sum(o.cluster_ids != n for o, n in zip(res, naive))
        return "yes" if bad == 0 else f"NO ({bad} prompts differ)"

    keys = [len({normalize_key(x) for x in map(extract_answer, r) if x}) for r in data]
    clusters = [len(set(n)) for n in naive]
    (t_nc, r_nc), (t_c, r_c) = timings[False], timings[True]
    desc = f"{name}; {sum(keys) / len(keys):.2f} distinct answers, {sum(clusters) / len(clusters):.2f} clusters per prompt"
    return [
        f"| {desc} | naive: `verify(parse(a), parse(b))` both ways, all 28 pairs (math-verify's call per pair) | {t_literal:.2f} | 1.0x | | (reference) |",
        f"| | naive, each response parsed once | {t_naive:.2f} | {t_literal / t_naive:.1f}x | 1.0x | yes |",
        f"| | ours, cross-prompt cache off | {t_nc:.2f} | **{t_literal / t_nc:.1f}x** | **{t_naive / t_nc:.1f}x** | {same(r_nc)} |",
        f"| | ours (default: cache on) | {t_c:.2f} | **{t_literal / t_c:.1f}x** | **{t_naive / t_c:.1f}x** | {same(r_c)} |",
    ], t_literal / t_c


def main(argv=None) -> str:
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--write", action="store_true")
    p.add_argument("--only", help="run only the answer sets whose name contains this (no --write)")
    a = p.parse_args(argv)

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; {a.prompts} prompts x 8 synthetic answers per case; "
        f"ours = buckets of identical answers + exact shortcuts + symmetric math-verify between distinct answers in "
        f"{a.workers} worker processes (start-up excluded); naive baselines in-process.",
        "",
        "| Answer set | Method | Wall (s) | Speed-up vs naive per pair | Speed-up vs naive parse-once | Partitions identical to naive |",
        "|---|---|---|---|---|---|",
    ]
    cases = [
        ("DAPO-like (integer ground truths; mostly integer answers)", dapo_like(a.prompts)),
        ("mixed forms, parameterised values (v in 1..300: little cross-prompt recurrence)", synthetic(a.prompts, v_max=300)),
        ("mixed forms, recurring values (v in 1..3: answers recur across prompts)", synthetic(a.prompts, v_max=3)),
        ("diverse forms (thousands separators, percents, units, sets, expressions, relations, tuples; v in 2..300)", diverse(a.prompts)),
    ]
    for name, data in cases:
        if a.only and a.only not in name:
            continue
        rows, _ = run_case(name, data, a.workers)
        lines += rows
    table = "\n".join(lines)
    print(table)
    if a.write and not a.only:
        write_section("clustering", table)
    return table


if __name__ == "__main__":
    main()
