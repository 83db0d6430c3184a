"""Answer clustering by mathematical equivalence (math-verify), fast and hang-proof.

The contract (checked against math-verify itself in ``tests/test_semantic_entropy_equivalence_tables.py``): with
``a_i = extract_answer(response_i)`` and ``P(a) = math_verify.parse("\\boxed{a}")``,

- two responses share a cluster exactly when their answers are connected by ``verify(P(a), P(b)) and
  verify(P(b), P(a))`` (what ``naive_cluster_answers`` computes over all pairs);
- ``correct[i] = verify(P(ground_truth), P(a_i))``, response i's own verdict;
- both are functions of the multiset of answers: permuting the responses permutes the ids and nothing else.

How it gets there cheaply:

1. Extract each response's final answer (``answers.extract_answer``).
2. Bucket identical answers (``answers.normalize_key``, the answer verbatim: math-verify parses identical strings
   identically, and any rewrite of the text can change its parse; the reasons are in ``answers``). A non-empty parse
   ends with a non-empty text (``fallback_mode="first_match"``), and ``verify`` also compares text with text, so an
   answer math-verify parses verifies against itself (tested on every table answer): one bucket is within one
   cluster, and its verdict against the ground truth is each member's.
3. Merge buckets whose answers are equivalent by the symmetric check, transitively (union-find over all bucket pairs:
   the connected components do not depend on the order). Pairs that math-verify is certain to reject
   (``shortcuts.certainly_unequal``: different integers, rationals, polynomials, intervals, sets) or to accept
   (``shortcuts.certainly_equal``: equal plain numbers, intervals or sets written differently) are settled without it.

math-verify's own timeout is signal based and only works in a main thread, so the checks run in worker processes
(each worker's main thread, with math-verify's per-call timeouts on), and the parent additionally bounds every task:
a worker that overruns is killed, the pool restarted, and that prompt falls back to bucket-only clustering.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import functools
import multiprocessing as mp
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from .answers import extract_answer, normalize_key
from .config import UNPARSEABLE_MODES
from .shortcuts import (
    Signature,
    certainly_equal,
    certainly_unequal,
    integer_parse,
    plain_integer,
    plain_value,
    signature,
)



# ----------------------------------------------------------------------------------------------- math-verify calls
def _mv_parse(answer: str, timeout_s: float):
    from math_verify import parse

    text = answer if "\\boxed" in answer else "\\boxed{" + answer + "}"
    try:
        return parse(text, parsing_timeout=max(1, int(round(timeout_s))))
    except Exception:  # noqa: BLE001 - math-verify raises on pathological input; treat as unparseable
        return []


def _mv_verify(gold, target, timeout_s: float) -> bool:
    from math_verify import verify

    try:
        return bool(verify(gold, target, timeout_seconds=max(1, int(round(timeout_s)))))
    except Exception:  # noqa: BLE001
        return False


def _mv_equivalent(a, b, timeout_s: float) -> bool:
    """The symmetric check: ``verify`` both ways (math-verify's ``verify`` is not symmetric)."""
    return _mv_verify(a, b, timeout_s) and _mv_verify(b, a, timeout_s)


def _parse(answer: str, timeout_s: float) -> list:
    """math-verify's parse of an answer; plain integers skip the parser (``shortcuts.integer_parse``)."""
    value = plain_integer(answer)
    return integer_parse(value, answer) if value is not None else _mv_parse(answer, timeout_s)


def _signature(answer: str, timeout_s: float, parse=_parse) -> Signature | None:
    value = plain_value(answer)
    if value is not None:  # no parse needed
        return signature([value, answer])
    parsed = parse(answer, timeout_s)
    return signature(parsed) if parsed else None


_cached_parse = functools.lru_cache(maxsize=1 << 16)(_parse)


@functools.lru_cache(maxsize=1 << 16)
def _cached_signature(answer: str, timeout_s: float) -> Signature | None:
    return _signature(answer, timeout_s, _cached_parse)


@functools.lru_cache(maxsize=1 << 18)
def _cached_equiv(a: str, b: str, timeout_s: float) -> bool:
    return _mv_equivalent(_cached_parse(a, timeout_s), _cached_parse(b, timeout_s), timeout_s)


@functools.lru_cache(maxsize=1 << 18)
def _cached_verify(gold: str, target: str, timeout_s: float) -> bool:
    return _mv_verify(_cached_parse(gold, timeout_s), _cached_parse(target, timeout_s), timeout_s)


def _find(parent: list[int], i: int) -> int:
    """Union-find root of ``i`` (with path halving)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


class _Answers:
    """The answers of one task, parsed lazily (a plain number is parsed only if math-verify itself must see it),
    with ``shortcuts.certainly_unequal``/``certainly_equal`` settling most pairs before math-verify is asked.
    ``cache``: memoise across tasks (the worker's lifetime), else within this task only."""

    def __init__(self, answers: Sequence[str], timeout_s: float, cache: bool):
        self.answers, self.timeout_s, self.cache = list(answers), timeout_s, cache
        self._plain = [plain_value(a) for a in self.answers]  # a regex each; None unless a plain value
        if cache:
            self._parse, self._signature = _cached_parse, _cached_signature
        else:
            self._parse = functools.lru_cache(maxsize=None)(_parse)
            self._signature = functools.lru_cache(maxsize=None)(lambda a, t: _signature(a, t, self._parse))

    def parsed(self, i: int) -> list:
        return self._parse(self.answers[i], self.timeout_s)

    def parseable(self, i: int) -> bool:
        return self._plain[i] is not None or len(self.parsed(i)) > 0

    def signature(self, i: int) -> Signature | None:
        return self._signature(self.answers[i], self.timeout_s)

    def equivalent(self, i: int, j: int) -> bool:
        """Symmetric math-verify equivalence (``verify`` both ways)."""
        if certainly_equal(self._plain[i], self._plain[j]):
            return True
        if certainly_unequal(self.signature(i), self.signature(j)):
            return False
        if self.cache:
            return _cached_equiv(*sorted((self.answers[i], self.answers[j])), self.timeout_s)
        return _mv_equivalent(self.parsed(i), self.parsed(j), self.timeout_s)

    def verifies(self, gold: int, i: int) -> bool:
        """``verify(gold, answer i)``: asymmetric, as graded."""
        if certainly_equal(self._plain[gold], self._plain[i]):
            return True
        if certainly_unequal(self.signature(gold), self.signature(i)):
            return False
        if self.cache:
            return _cached_verify(self.answers[gold], self.answers[i], self.timeout_s)
        return _mv_verify(self.parsed(gold), self.parsed(i), self.timeout_s)


def merge_task(
    reps: Sequence[str], ground_truth: str | None, timeout_s: float, cache: bool = True
) -> tuple[list[int], list[bool], list[bool]]:
    """Work unit run in a worker process for one prompt.

    ``reps`` are distinct answers (one per bucket). Returns ``(parent, parsed, correct)``: ``parent[i]`` is the
    union-find root of answer ``i`` after symmetric merging; ``parsed[i]`` whether math-verify could parse it;
    ``correct[i]`` whether ``verify(ground_truth, answer i)`` holds, answer i's own verdict (False when no ground truth
    is given): math-verify's grading is not transitive across a cluster, so a cluster's answers may grade differently.

    With ``cache`` the worker memoises parses and pairwise verdicts across prompts (math-verify is deterministic;
    answers such as small integers recur across a dataset's prompts).
    """
    has_gold = ground_truth is not None and bool(str(ground_truth).strip())
    answers = _Answers([*reps, str(ground_truth).strip()] if has_gold else reps, timeout_s, cache)
    n = len(reps)
    parsed = [answers.parseable(i) for i in range(n)]
    parent = list(range(n))
    find = functools.partial(_find, parent)

    for i in range(n):
        if not parsed[i]:
            continue
        for j in range(i + 1, n):
            if parsed[j] and find(i) != find(j) and answers.equivalent(i, j):
                parent[find(j)] = find(i)
    roots = [find(i) for i in range(n)]
    correct = [False] * n
    if has_gold and answers.parseable(n):
        correct = [parsed[i] and answers.verifies(n, i) for i in range(n)]
    return roots, parsed, correct


def answer_is_correct(answer: str, ground_truth: str, timeout_s: float = 5.0, cache: bool = True) -> bool:
    """One extracted answer's verdict against the ground truth, exactly as ``merge_task`` grades it (the scoring job's
    and the evaluation's ``correct``): ``verify(parse("\\boxed{truth}"), parse("\\boxed{answer}"))`` with the same
    exact shortcuts; False when either does not parse. The strict training reward calls this (``verl_ext.grading``)."""
    return merge_task([answer], ground_truth, timeout_s, cache)[2][0]


def merge_many(tasks: Sequence[tuple[Sequence[str], str | None]], timeout_s: float, cache: bool = True) -> list:
    """``merge_task`` over a chunk of prompts (one round trip to the worker)."""
    return [merge_task(reps, gt, timeout_s, cache) for reps, gt in tasks]


def _warm() -> bool:
    import math_verify  # noqa: F401

    _mv_parse("1", 1.0)
    return True


# --------------------------------------------------------------------------------------------------- worker pool
class MathVerifyPool:
    """Process pool for math-verify with a hard per-task deadline.

    ``num_workers=0`` runs in-process (math-verify's signal timeout then only applies in the main thread).
    """

    def __init__(
        self, num_workers: int = 2, timeout_s: float = 5.0, start_method: str = "spawn", cache: bool = True, chunk_size: int = 16
    ):
        self.num_workers = int(num_workers)
        self.timeout_s = float(timeout_s)
        self.cache = bool(cache)
        self.chunk_size = max(1, int(chunk_size))
        self.start_method = start_method
        self.timeouts = 0
        self._ex: cf.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        if self.num_workers > 0:
            self._start()

    def _start(self) -> None:
        self._ex = cf.ProcessPoolExecutor(self.num_workers, mp_context=mp.get_context(self.start_method))
        # warm-up (imports sympy/math-verify) runs in the background, overlapping with model start-up
        self._warmups = [self._ex.submit(_warm) for _ in range(self.num_workers)]

    def wait_ready(self) -> None:
        """Block until every worker has imported math-verify (start-up otherwise overlaps with other work)."""
        for f in getattr(self, "_warmups", []):
            f.result()

    def _restart(self) -> None:
        ex, self._ex = self._ex, None
        if ex is not None:
            for p in list((getattr(ex, "_processes", None) or {}).values()):
                try:
                    p.kill()
                except Exception:  # noqa: BLE001
                    pass
            ex.shutdown(wait=False, cancel_futures=True)
        self._start()

    def _deadline(self, n_reps: int, has_gt: bool) -> float:
        calls = 2 * n_reps + n_reps * (n_reps - 1) + (n_reps + 1 if has_gt else 0)
        return self.timeout_s * calls + 5.0

    def map_merge(self, tasks: Sequence[tuple[Sequence[str], str | None]]) -> list[tuple[list[int], list[bool], list[bool]]]:
        """Run ``merge_task`` for every (representatives, ground_truth); order preserved.

        Prompts travel in chunks (fewer round trips); a chunk that overruns its deadline is retried prompt by prompt,
        and a single prompt that overruns falls back to bucket-only clustering (counted in ``self.timeouts``).
        """
        if self.num_workers <= 0:
            return [merge_task(list(r), gt, self.timeout_s, self.cache) for r, gt in tasks]
        with self._lock:
            results: list = [None] * len(tasks)
            chunks = [list(range(i, min(len(tasks), i + self.chunk_size))) for i in range(0, len(tasks), self.chunk_size)]
            retry = self._run_chunks(tasks, chunks, results)
            if retry:
                self._run_chunks(tasks, [[i] for i in retry], results, give_up=True)
            return results

    def _run_chunks(self, tasks, chunks, results, give_up: bool = False) -> list[int]:
        pending = list(chunks)
        failed: list[int] = []
        while pending:
            futs = [(c, self._ex.submit(merge_many, [(list(tasks[i][0]), tasks[i][1]) for i in c], self.timeout_s, self.cache)) for c in pending]
            pending = []
            broken = False
            for c, fut in futs:
                if broken:  # the pool was restarted: resubmit what was queued on the dead one
                    pending.append(c)
                    continue
                deadline = sum(self._deadline(len(tasks[i][0]), tasks[i][1] is not None) for i in c)
                try:
                    for i, r in zip(c, fut.result(timeout=deadline)):
                        results[i] = r
                except (cf.TimeoutError, cf.process.BrokenProcessPool):
                    broken = True
                    if give_up:  # a pathological answer hung (or crashed) a worker: no merging for this prompt
                        self.timeouts += 1
                        for i in c:
                            n = len(tasks[i][0])
                            results[i] = (list(range(n)), [True] * n, [False] * n)
                    else:
                        failed.extend(c)
            if broken:
                self._restart()
        return failed

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=True)
            self._ex = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_DEFAULT_POOL: MathVerifyPool | None = None


def default_pool() -> MathVerifyPool:
    """A lazily started process-wide pool (2 workers, 5 s per call), closed at exit."""
    global _DEFAULT_POOL
    if _DEFAULT_POOL is None:
        _DEFAULT_POOL = MathVerifyPool(num_workers=2, timeout_s=5.0)
        atexit.register(_DEFAULT_POOL.close)
    return _DEFAULT_POOL


# ------------------------------------------------------------------------------------------------------ clustering
@dataclass
class PromptClustering:
    """Clustering of one prompt's responses."""

    cluster_ids: list[int]
    answers: list[str | None]  # extracted answer per response (None: no answer found)
    correct: list[bool]  # per response, against the ground truth
    unparseable: list[bool]  # per response


@dataclass
class _Prepared:
    answers: list[str | None]
    bucket_of: list[int | None]  # per response: bucket index, or None when there is no answer
    reps: list[str]  # one answer per bucket (the bucket's answers are identical, so which one does not matter)


def _prepare(responses: Sequence[str], answer_fallback: str = "none") -> _Prepared:
    answers = [extract_answer(r, answer_fallback) for r in responses]
    keys: dict[str, int] = {}
    reps: list[str] = []
    bucket_of: list[int | None] = []
    for a in answers:
        if a is None:
            bucket_of.append(None)
            continue
        k = normalize_key(a)
        if not k:
            bucket_of.append(None)
            continue
        if k not in keys:
            keys[k] = len(reps)
            reps.append(a)
        bucket_of.append(keys[k])
    return _Prepared(answers, bucket_of, reps)


def _finish(prep: _Prepared, merged: tuple[list[int], list[bool], list[bool]], unparseable: str) -> PromptClustering:
    roots, parsed, correct_rep = merged
    ids: list[int] = []
    label: dict[object, int] = {}
    correct: list[bool] = []
    unparse: list[bool] = []
    for i, b in enumerate(prep.bucket_of):
        if b is None or not parsed[b]:
            unparse.append(True)
            correct.append(False)
            key: object = ("shared",) if unparseable == "shared" else ("single", i)
        else:
            unparse.append(False)
            correct.append(bool(correct_rep[b]))
            key = ("root", roots[b])
        if key not in label:  # ids numbered in order of first appearance: canonical, comparable partitions
            label[key] = len(label)
        ids.append(label[key])
    return PromptClustering(ids, prep.answers, correct, unparse)


def cluster_prompts(
    batch: Sequence[tuple[Sequence[str], str | None]],
    *,
    unparseable: str = "singleton",
    pool: MathVerifyPool | None = None,
    answer_fallback: str = "none",
) -> list[PromptClustering]:
    """Cluster many prompts at once: ``batch`` is a list of (responses, ground_truth or None).
    ``answer_fallback`` is passed to ``extract_answer``."""
    if unparseable not in UNPARSEABLE_MODES:
        raise ValueError(f"unparseable must be one of {UNPARSEABLE_MODES}, got {unparseable!r}")
    pool = pool or default_pool()
    preps = [_prepare(responses, answer_fallback) for responses, _ in batch]
    merged = pool.map_merge([(p.reps, gt) for p, (_, gt) in zip(preps, batch)])
    return [_finish(p, m, unparseable) for p, m in zip(preps, merged)]


def cluster_answers(
    responses: list[str], *, unparseable: str = "singleton", pool: MathVerifyPool | None = None
) -> list[int]:
    """Cluster id per response; ids are numbered 0, 1, ... in order of first appearance.

    Responses whose final answers (``Answer:`` line, else last ``\\boxed{}``) are mathematically equivalent by
    a symmetric math-verify check share a cluster. Responses without a parseable answer are each their own cluster
    (``unparseable="singleton"``) or all share one (``"shared"``).
    """
    return cluster_prompts([(responses, None)], unparseable=unparseable, pool=pool)[0].cluster_ids


def naive_cluster_answers(
    responses: Sequence[str], *, unparseable: str = "singleton", timeout_s: float = 5.0, parse_once: bool = True
) -> list[int]:
    """Reference: symmetric math-verify over *all* response pairs, in-process (benchmarks and tests only).

    ``parse_once=False`` is math-verify's documented call per pair, ``verify(parse(a), parse(b))`` (both ways);
    ``True`` parses each response once first. No shortcut of ours is used either way.
    """
    answers = [extract_answer(r) for r in responses]
    usable = [a is not None for a in answers]
    n = len(responses)
    exprs: list[list] = [[] for _ in range(n)]
    if parse_once:
        exprs = [_mv_parse(a, timeout_s) if ok else [] for a, ok in zip(answers, usable)]
    parent = list(range(n))
    find = functools.partial(_find, parent)

    for i in range(n):
        for j in range(i + 1, n):
            if not (usable[i] and usable[j]):
                continue
            if not parse_once:
                exprs[i], exprs[j] = _mv_parse(answers[i], timeout_s), _mv_parse(answers[j], timeout_s)
            a, b = exprs[i], exprs[j]
            # every pair is checked (no skipping via the union-find): that is the naive baseline
            if a and b and _mv_equivalent(a, b, timeout_s):
                parent[find(j)] = find(i)
    if not parse_once and sum(usable) == 1:  # an answer without a partner: parsed once, to know it is parseable
        k = usable.index(True)
        exprs[k] = _mv_parse(answers[k], timeout_s)
    ids, label = [], {}
    for i in range(n):
        key = ("root", find(i)) if exprs[i] else (("shared",) if unparseable == "shared" else ("single", i))
        if key not in label:
            label[key] = len(label)
        ids.append(label[key])
    return ids
