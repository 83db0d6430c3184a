"""The math reward (recipe/sent/reward.py): right / wrong / pathological answers per data source (each source's
grader, verl_ext.grading; tests/test_grading.py checks that the reward and the evaluation agree), and verl's own
loading path (reward.custom_reward_function.* of the composed recipe config)."""

from __future__ import annotations

import time

import pytest

from recipe.sent import reward
from recipe.sent.reward import compute_score

LONG_REASONING = "Let me think step by step. " * 2000  # ~54k characters before the answer

# (data_source, response, ground truth, correct?)
TABLE = [
    # DAPO-Math-17k: verl's math_dapo rules (Answer: line, else the last \boxed{}), integer answers
    ("math_dapo", "1 + 1 = 2.\nAnswer: 2", "2", True),
    ("math_dapo", "So the answer is \\boxed{34}.", "34", True),
    ("math_dapo", "Answer: 35", "34", False),
    ("math_dapo", "\\boxed{34}" + " and then I rambled on" * 20, "34", False),  # boxed answer not at the end
    ("math_dapo", LONG_REASONING + "Answer: 204", "204", True),
    ("math_dapo", "I don't know.", "7", False),
    # AIME / AMC: integers through math-verify
    ("aime24", "Thus the remainder is \\boxed{891}.", "891", True),
    ("aime24", "Thus the remainder is \\boxed{890}.", "891", False),
    ("aime25", LONG_REASONING + "The final answer is $\\boxed{1024}$", "1024", True),
    ("amc23", "We get \\boxed{27.0}", "27", True),
    # MATH-500 / Minerva / OlympiadBench: symbolic equivalence
    ("math500", "Hence $\\boxed{\\dfrac{2}{4}}$.", "\\frac{1}{2}", True),
    ("math500", "Hence $\\boxed{0.5}$.", "\\frac{1}{2}", True),
    ("math500", "Hence $\\boxed{\\sqrt{2}/2}$.", "\\frac{\\sqrt{2}}{2}", True),
    ("math500", "Hence $\\boxed{\\frac{1}{3}}$.", "\\frac{1}{2}", False),
    ("minerva", "The temperature is \\boxed{5800} K.", "5800", True),
    ("olympiadbench", "The pair is \\boxed{(3,2)}.", "(3,2)", True),
    ("olympiadbench", "The pair is \\boxed{(2,3)}.", "(3,2)", False),
]

PATHOLOGICAL = [
    ("empty response", "math500", "", "1"),
    ("None response", "math500", None, "1"),
    ("empty ground truth", "math500", "\\boxed{1}", ""),
    ("huge ground truth", "math500", "\\boxed{1}", "1" * 10_000),
    ("unbalanced braces", "math500", "\\boxed{\\frac{1}{" * 500, "1"),
    ("deep nesting", "aime24", "\\boxed{" * 3000 + "1" + "}" * 3000, "2"),
    ("huge response", "olympiadbench", "x" * 2_000_000, "3"),
    ("binary junk", "minerva", "\x00\xff\ufffd" * 1000, "3"),
    ("python payload", "math500", "\\boxed{__import__('os').system('touch {marker}')}", "0"),
    ("python payload dapo", "math_dapo", "Answer: __import__('os').system('touch {marker}')", "0"),
]


@pytest.mark.parametrize(("data_source", "response", "truth", "correct"), TABLE)
def test_reward_table(data_source, response, truth, correct):
    result = compute_score(data_source, response, truth, extra_info={"index": 0})
    assert result == {"score": 1.0 if correct else -1.0, "acc": float(correct)}


@pytest.mark.parametrize(("case", "data_source", "response", "truth"), PATHOLOGICAL, ids=[p[0] for p in PATHOLOGICAL])
def test_reward_pathological_answers_score_wrong_fast_and_never_run(case, data_source, response, truth, tmp_path):
    marker = tmp_path / "ran"
    if response is not None:
        response = response.replace("{marker}", str(marker))
    start = time.monotonic()
    result = compute_score(data_source, response, truth)
    assert result == {"score": -1.0, "acc": 0.0}
    assert time.monotonic() - start < reward.MATH_VERIFY_TIMEOUT_S + 5
    assert not marker.exists()  # model output is parsed, never evaluated


def test_inputs_are_bounded(monkeypatch):
    seen = []
    monkeypatch.setattr(reward, "math_verify_equal", lambda solution, truth, timeout: seen.append(solution) or True)
    assert compute_score("math500", "y" * 100_000 + "\\boxed{1}", "1", grader="math_verify")["acc"] == 1.0
    assert len(seen[0]) == reward.MAX_SOLUTION_CHARS and seen[0].endswith("\\boxed{1}")
    # the strict grader extracts its answer from the same bounded tail: a box further back is not seen
    assert compute_score("math500", "\\boxed{1}" + "y" * reward.MAX_SOLUTION_CHARS, "1")["acc"] == 0.0
    assert compute_score("math500", "y" * 100_000 + "\\boxed{1}", "1")["acc"] == 1.0


def test_timeout_returns_the_default_kills_the_stuck_worker_and_the_pool_recovers():
    assert compute_score("math500", "\\boxed{1}", "1")["acc"] == 1.0
    pool = reward._get_pool()
    workers = list(pool._processes.values())
    start = time.monotonic()
    # a call that hangs (stands in for a pathological parse) returns the default at the timeout ...
    assert reward.run_with_timeout(time.sleep, 600, timeout=0.5, default="timed out") == "timed out"
    assert time.monotonic() - start < 5
    for process in workers:  # ... and its worker does not stay busy forever (30 s: reaping is slow on a loaded CI)
        process.join(timeout=30)
        assert not process.is_alive()
    # ... and the next call gets a fresh, working pool.
    assert compute_score("math500", "\\boxed{1}", "1") == {"score": 1.0, "acc": 1.0}
    assert reward._get_pool() is not pool


def test_broken_pool_is_replaced():
    pool = reward._get_pool()
    assert compute_score("minerva", "\\boxed{2}", "2")["acc"] == 1.0
    for process in list(pool._processes.values()):  # a worker killed, e.g. by the OOM killer
        process.kill()
        process.join()
    assert compute_score("minerva", "\\boxed{2}", "2")["acc"] == 1.0
    assert reward._get_pool() is not pool


def test_reward_kwargs_change_the_scores():
    assert compute_score("aime24", "\\boxed{1}", "2", incorrect_score=0.0) == {"score": 0.0, "acc": 0.0}
    assert compute_score("math_dapo", "Answer: 2", "2", correct_score=2.0, unused_key="x")["score"] == 2.0


def test_verl_loads_our_reward_from_the_recipe_config(recipe_config):
    """verl's own loader (get_custom_reward_fn, what RewardLoopWorker calls) with the composed recipe config."""
    from verl.trainer.ppo.reward import get_custom_reward_fn

    cfg = recipe_config()
    assert cfg.reward.custom_reward_function.path == "pkg://recipe.sent.reward"
    assert cfg.reward.custom_reward_function.name == "compute_score"
    fn = get_custom_reward_fn(cfg)
    assert fn is not None and fn.args[0] is compute_score
    # called the way verl's naive reward manager calls it (keyword arguments, extra_info with verl's additions)
    extra = {"index": 3, "num_turns": 1, "rollout_reward_scores": {}}
    assert fn(data_source="math_dapo", solution_str="Answer: 12", ground_truth="12", extra_info=extra) == {
        "score": 1.0,
        "acc": 1.0,
    }
    assert fn(data_source="aime24", solution_str="\\boxed{11}", ground_truth="12", extra_info=extra)["acc"] == 0.0

    cfg = recipe_config(["+reward.custom_reward_function.reward_kwargs.incorrect_score=0.0"])
    fn = get_custom_reward_fn(cfg)
    assert fn(data_source="aime24", solution_str="\\boxed{11}", ground_truth="12", extra_info=extra)["score"] == 0.0
