"""Semantic entropy of a training step's rollout groups (`verl_ext.semantic_entropy.rollout_groups`): the scoring
job's clustering of each prompt's n answers, summarised as mean, median and the share of groups that all agree."""

from __future__ import annotations

import math

import pytest

from verl_ext.semantic_entropy import MathVerifyPool
from verl_ext.semantic_entropy.clustering import naive_cluster_answers
from verl_ext.semantic_entropy.entropy import semantic_entropy
from verl_ext.semantic_entropy.rollout_groups import group_entropies, group_responses, rollout_se_stats

LN2, LN3 = math.log(2), math.log(3)
HALF = ["Answer: 1/2", "Answer: 0.5", "Answer: \\frac{1}{2}", "so \\boxed{\\dfrac{1}{2}}"]  # one value, four forms


@pytest.mark.parametrize(("groups", "options", "expected"), [
    # one group: all agree, a 2-2 split, a 1-1-1 split (nats)
    ([["Answer: 3"] * 4], {}, {"mean": 0.0, "p50": 0.0, "agree_frac": 1.0}),
    ([["Answer: 1", "Answer: 2", "Answer: 1", "Answer: 2"]], {}, {"mean": LN2, "p50": LN2, "agree_frac": 0.0}),
    ([["Answer: 1", "Answer: 2", "Answer: 3"]], {}, {"mean": LN3, "p50": LN3, "agree_frac": 0.0}),
    # math-verify equivalence merges different forms of one value (as the scoring job does)
    ([HALF], {}, {"mean": 0.0, "p50": 0.0, "agree_frac": 1.0}),
    # unparseable answers: each its own cluster (singleton, the scoring job's default) or one shared cluster
    ([["no answer", "none either"]], {}, {"mean": LN2, "p50": LN2, "agree_frac": 0.0}),
    ([["no answer", "none either"]], {"unparseable": "shared"}, {"mean": 0.0, "p50": 0.0, "agree_frac": 1.0}),
    # the answer extraction's fallback: no Answer: line and no box -> no answer, unless last_number
    ([["so 7", "it is 7"]], {}, {"mean": LN2, "p50": LN2, "agree_frac": 0.0}),
    ([["so 7", "it is 7"]], {"answer_fallback": "last_number"}, {"mean": 0.0, "p50": 0.0, "agree_frac": 1.0}),
    # several groups: mean, median and share over groups
    ([["Answer: 1"] * 2, ["Answer: 1", "Answer: 2"]], {}, {"mean": LN2 / 2, "p50": LN2 / 2, "agree_frac": 0.5}),
    ([["Answer: 1"] * 3, ["Answer: 1", "Answer: 2", "Answer: 2"], ["Answer: 4", "Answer: 5", "Answer: 6"]], {},
     {"mean": (0.6365141682948128 + LN3) / 3, "p50": 0.6365141682948128, "agree_frac": 1 / 3}),
    # nothing to measure
    ([], {}, {}),
    ([[]], {}, {}),
])
def test_rollout_se_stats(groups, options, expected):
    stats = rollout_se_stats(groups, pool=MathVerifyPool(num_workers=0), **options)
    assert stats.keys() == expected.keys()
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, abs=1e-12), key


def test_group_entropies_match_math_verify_over_all_pairs():
    """The partition behind each SE is math-verify's symmetric one (the scoring job's contract), here against the
    naive all-pairs reference."""
    groups = [HALF + ["Answer: 2", "Answer: 2.0", "no answer"], ["Answer: x+1", "Answer: 1+x", "Answer: (1,2)",
                                                                  "Answer: \\{1,2\\}", "Answer: [1,2]"]]
    got = group_entropies(groups, pool=MathVerifyPool(num_workers=0))
    for group, (se, agree) in zip(groups, got):
        reference = naive_cluster_answers(group)
        assert se == pytest.approx(semantic_entropy(reference)) and agree == (len(set(reference)) == 1)


def test_worker_processes_give_the_in_process_result():
    groups = [HALF, ["Answer: 1", "Answer: 2", "x"], ["Answer: 3"] * 8]
    with MathVerifyPool(num_workers=1, timeout_s=5) as pool:
        assert rollout_se_stats(groups, pool=pool) == rollout_se_stats(groups, pool=MathVerifyPool(num_workers=0))


def test_group_responses_by_uid_in_order_of_first_appearance():
    assert group_responses(["b", "a", "b", "a", "c"], ["1", "2", "3", "4", "5"]) == [["1", "3"], ["2", "4"], ["5"]]
    with pytest.raises(ValueError, match="3 uids for 2 responses"):
        group_responses(["a", "b", "c"], ["1", "2"])
