"""One grader for training and evaluation (`verl_ext.grading`): for every response form, the training reward
(`recipe.sent.reward.compute_score`, as verl calls it) and the evaluation's verdict (`clustering.cluster_prompts`, the
call the eval harness, the scoring job and the per-step semantic entropy make, with the data source's answer fallback)
agree, and the verdicts are the documented ones."""

from __future__ import annotations

import pytest

from recipe.sent.reward import compute_score
from verl_ext import toy_task
from verl_ext.grading import DEFAULTS, STRICT, Grader, grader_for
from verl_ext.semantic_entropy.clustering import MathVerifyPool, cluster_prompts

TRUTH = "33"
# (form, response to 12+21, right under the toy task's strict grader?, right under verl's math_verify semantics?)
FORMS = [
    ("well formed", "12+21=33\n\\boxed{33}", True, True),
    ("missing brace", "12+21=33\n\\boxed33}", False, True),  # the lab's lost format: math_verify reads the 33 above
    ("missing brace, wrong line", "12+21=232\n\\boxed232}", False, False),
    ("no box", "12+21=33", False, True),
    ("text after the box", "12+21=33\n\\boxed{33} is the sum", True, True),
    ("two boxes, the last right", "\\boxed{32}\n12+21=33\n\\boxed{33}", True, True),
    ("two boxes, the last wrong", "12+21=33\n\\boxed{33}\n\\boxed{34}", False, False),
    ("an Answer: line", "12+21=33\nAnswer: 33", True, True),
    ("a wrong box after a right line", "12+21=33\n\\boxed{34}", False, False),
    ("a wrong box after a right Answer: line", "Answer: 33\n\\boxed{34}", True, False),  # the Answer: line wins
    ("a boxed expression", "\\boxed{12+21}", True, True),
    ("empty box", "12+21=33\n\\boxed{}", False, True),
]
SOURCES = [toy_task.DATA_SOURCE, "sent_demo", "aime24", "math500"]


@pytest.fixture(scope="module")
def pool():
    with MathVerifyPool(num_workers=1, timeout_s=5) as p:
        yield p


def evaluation_verdict(response: str, data_source: str, pool) -> bool:
    grader = grader_for(data_source)
    return cluster_prompts([([response], TRUTH)], pool=pool, answer_fallback=grader.answer_fallback)[0].correct[0]


@pytest.mark.parametrize("data_source", SOURCES)
@pytest.mark.parametrize(("form", "response", "strict", "lenient"), FORMS, ids=[f[0] for f in FORMS])
def test_reward_and_evaluation_agree_on_every_form(form, response, strict, lenient, data_source, pool):
    reward = compute_score(data_source, response, TRUTH)["acc"] == 1.0
    assert reward == evaluation_verdict(response, data_source, pool), form
    if data_source != "sent_demo":  # the strict grader without a fallback
        assert reward is strict, form


@pytest.mark.parametrize(("form", "response", "strict", "lenient"), FORMS, ids=[f[0] for f in FORMS])
def test_verls_math_verify_semantics_stay_one_choice_away(form, response, strict, lenient):
    assert (compute_score("aime24", response, TRUTH, grader="math_verify")["acc"] == 1.0) is lenient, form


@pytest.mark.parametrize(("response", "right"), [
    ("the sum is 33", True),  # no format: the bundled set's last number
    ("12+21=33, so 34", False),
    ("\\boxed{33} then 34", True),  # a box still wins over the last number
    ("no number at all", False),
])
def test_the_bundled_sets_grader_reads_the_last_number_when_there_is_no_box(response, right, pool):
    assert grader_for("sent_demo") == Grader("strict", "last_number")
    assert (compute_score("sent_demo", response, TRUTH)["acc"] == 1.0) is right
    assert evaluation_verdict(response, "sent_demo", pool) is right


def test_each_source_has_its_grader_and_overrides_name_one():
    assert grader_for(toy_task.DATA_SOURCE) == STRICT == Grader("strict", "none")
    assert grader_for("math_dapo") == DEFAULTS["math_dapo"] and grader_for("aime25") == STRICT
    assert grader_for("sent_toy", "math_verify") == Grader("math_verify", "none")
    assert grader_for("sent_toy", answer_fallback="last_number") == Grader("strict", "last_number")
    with pytest.raises(ValueError, match="grader must be one of .*'strict'.*got 'lenient'"):
        grader_for("sent_toy", "lenient")
    with pytest.raises(ValueError, match="answer_fallback must be one of"):
        Grader("strict", "first_number")
