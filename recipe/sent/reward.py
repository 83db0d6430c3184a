"""SENT's math reward, in the form verl's reward managers call it (configs/sent_trainer.yaml: `reward:` block):

    reward.custom_reward_function.path=pkg://recipe.sent.reward  reward.custom_reward_function.name=compute_score

How a response is graded is `verl_ext.grading`'s definition, chosen per data source (`grading.grader_for`):

- `strict` (every source but DAPO, the toy task's and the benchmarks'): the final answer, extracted as the scoring job
  and the evaluation extract it, against the ground truth by the same math-verify verdict
  (`clustering.answer_is_correct`); no well-formed final answer scores -1. The reward and the evaluation agree on
  every response form (`tests/test_grading.py`).
- `math_dapo` (`data_source` starting with `math_dapo`, integer answers): verl's own `math_dapo` rules, +1 / -1
  (the `Answer: ...` line, else the last `\\boxed{}`), as the release trained.
- `math_verify` (opt in: `+reward.custom_reward_function.reward_kwargs.grader=math_verify`): Hugging Face
  math-verify over the whole response (the same parse/verify call as verl's `verl.utils.reward_score.math_verify`).

math-verify runs in a spawn process pool with a per-call timeout. Unlike verl's pool, ours is rebuilt when a worker
dies or hangs: a timed-out call terminates the pool's processes (a stuck worker would otherwise stay busy forever) and
a broken pool (worker killed, e.g. out of memory) is replaced instead of failing every later call. Model output is
never `eval`-ed (math-verify parses LaTeX / expressions symbolically), and both strings are bounded: only the last
MAX_SOLUTION_CHARS characters of the response (the final answer is at the end) and MAX_GROUND_TRUTH_CHARS of the
ground truth are looked at.

Returns {"score": +1.0 | -1.0, "acc": 1.0 | 0.0} (numbers only: verl averages every returned key in validation);
verl logs `acc` as the core validation metric.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures.process import BrokenProcessPool
from typing import Any

MAX_SOLUTION_CHARS = 4096
MAX_GROUND_TRUTH_CHARS = 512
MATH_VERIFY_TIMEOUT_S = 30.0  # as verl's math_verify; math-verify's own parse/verify timeouts (5 s each) come first
STRICT_VERIFY_TIMEOUT_S = 5.0  # math-verify's parse/verify timeouts inside the strict verdict, as the scoring job's
NUM_VERIFY_WORKERS = 2  # per process that scores (verl runs reward.num_workers RewardLoopWorker actors)

logger = logging.getLogger(__name__)
_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _verify_worker(ground_truth: str, solution: str) -> bool:
    """Runs in a spawned process (math-verify's own signal.alarm timeouts work there). Same targets as verl's."""
    from math_verify.grader import verify
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig, parse

    gold = parse("\\boxed{" + ground_truth + "}", (LatexExtractionConfig(),))
    pred = parse(solution, (ExprExtractionConfig(), LatexExtractionConfig()))
    return bool(gold and pred and any(verify(g, p) for g in gold for p in pred))


def _get_pool() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(NUM_VERIFY_WORKERS, mp_context=multiprocessing.get_context("spawn"))
        return _pool


def _reset_pool(pool: ProcessPoolExecutor, kill: bool) -> None:
    """Drop `pool` (if it is still the current one); with kill=True terminate its workers (one may be stuck)."""
    global _pool
    with _pool_lock:
        if _pool is pool:
            _pool = None
    if kill:
        # SIGKILL: a worker started from a thread that blocks SIGTERM inherits the block and would outlive terminate()
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


@atexit.register
def _shutdown_pool() -> None:
    if _pool is not None:
        _reset_pool(_pool, kill=True)


def run_with_timeout(fn, *args, timeout: float, default: Any) -> Any:
    """fn(*args) in the worker pool; `default` on timeout (the pool's workers are terminated: one is stuck) or on
    an error. A pool found broken (a worker was killed, or another call's timeout replaced it) is replaced and the
    call retried once."""
    for _attempt in range(2):
        pool = _get_pool()
        try:
            return pool.submit(fn, *args).result(timeout=timeout)
        except FuturesTimeoutError:
            logger.warning("math-verify timed out after %.1fs; restarting its worker pool", timeout)
            _reset_pool(pool, kill=True)
            return default
        except BrokenProcessPool:
            logger.warning("math-verify worker pool broke (a worker died); starting a new one")
            _reset_pool(pool, kill=True)
        except Exception as exc:  # noqa: BLE001  (a parse error in the worker is a wrong answer, not a crash)
            logger.warning("math-verify failed (%s: %s); scoring the answer as wrong", type(exc).__name__, exc)
            return default
    return default


def _strict_worker(ground_truth: str, answer: str, timeout_s: float) -> bool:
    """Runs in a spawned process: the scoring job's and the evaluation's verdict on one extracted answer."""
    from verl_ext.semantic_entropy.clustering import answer_is_correct

    return answer_is_correct(answer, ground_truth, timeout_s)


def math_verify_equal(solution: str, ground_truth: str, timeout: float = MATH_VERIFY_TIMEOUT_S) -> bool:
    """math-verify equivalence in a worker process; False on timeout or error."""
    return bool(run_with_timeout(_verify_worker, ground_truth, solution, timeout=timeout, default=False))


def answer_equal(answer: str, ground_truth: str, timeout: float = MATH_VERIFY_TIMEOUT_S) -> bool:
    """The strict grader's verdict on an extracted answer, in a worker process; False on timeout or error."""
    return bool(run_with_timeout(_strict_worker, ground_truth, answer, STRICT_VERIFY_TIMEOUT_S, timeout=timeout,
                                 default=False))


def _bounded(text: Any, limit: int) -> str:
    text = "" if text is None else str(text)
    return text[-limit:]


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict | None = None,
    *,
    correct_score: float = 1.0,
    incorrect_score: float = -1.0,
    timeout: float = MATH_VERIFY_TIMEOUT_S,
    grader: str | None = None,
    answer_fallback: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl's custom reward function signature (naive / dapo managers); extra keyword arguments are ignored.
    `correct_score` / `incorrect_score` / `timeout` / `grader` / `answer_fallback` can be set with
    `+reward.custom_reward_function.reward_kwargs.*`; `grader` and `answer_fallback` default to the data source's
    (`verl_ext.grading.grader_for`)."""
    from verl_ext.grading import grader_for

    chosen = grader_for(data_source, grader, answer_fallback)
    solution = _bounded(solution_str, MAX_SOLUTION_CHARS)
    truth = str(ground_truth if ground_truth is not None else "").strip()
    if not truth or len(truth) > MAX_GROUND_TRUTH_CHARS or not solution.strip():
        return {"score": incorrect_score, "acc": 0.0}

    if chosen.name == "math_dapo":
        from verl.utils.reward_score import math_dapo

        correct = bool(math_dapo.compute_score(solution, truth)["acc"])
    elif chosen.name == "math_verify":
        correct = math_verify_equal(solution, truth, timeout=timeout)
    else:
        answer = chosen.final_answer(solution)
        correct = answer is not None and answer_equal(answer, truth, timeout=timeout)
    return {"score": correct_score if correct else incorrect_score, "acc": float(correct)}
