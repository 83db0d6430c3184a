"""How a response is graded against its ground truth: one definition for the training reward
(`recipe/sent/reward.py`), the semantic entropy over training and the scoring job (`semantic_entropy.clustering`)
and the evaluation harness (`verl_ext.eval`), so that what trains is what is measured.

A grader is a named choice, made per data source (`grader_for`; `DEFAULTS` by data-source prefix):

- ``strict``: the response's final answer (`answers.extract_answer`: the last ``Answer:`` line, else the last
  well-formed ``\\boxed{}``; with ``answer_fallback="last_number"`` the last number when neither is there) compared
  with the ground truth by math-verify, ``verify(parse("\\boxed{truth}"), parse("\\boxed{answer}"))``
  (`clustering.answer_is_correct`, the scoring job's and the evaluation's verdict). No final answer: wrong. The
  default for every source but DAPO: the scoring job and the evaluation read the final answer, and a reward that read
  anything else would leave the answer format under no training pressure, free to drift (a toy lab run whose final
  model wrote ``\\boxed232}`` for ``\\boxed{33}`` still earned +1 from the whole response).
- ``math_verify``: verl's math-verify semantics over the whole response (`verl.utils.reward_score.math_verify`): the
  last expression math-verify can read, so ``12+21=33\\n\\boxed232}`` reads 33. For users who expect verl's own
  reward (``+reward.custom_reward_function.reward_kwargs.grader=math_verify``); the scoring job and the evaluation do
  not grade this way, so with it they can disagree with the reward on a malformed answer.
- ``math_dapo``: verl's ``math_dapo`` rules (the ``Answer:`` line, else the last ``\\boxed{}``, string-normalised;
  integer answers), as the authors' release trained on DAPO-Math-17k.

Pure Python: no Ray, Hydra or verl import here (verl's graders are imported where they run).
"""

from __future__ import annotations

from dataclasses import dataclass

from verl_ext.semantic_entropy.answers import ANSWER_FALLBACKS, extract_answer

GRADERS = ("strict", "math_verify", "math_dapo")


@dataclass(frozen=True)
class Grader:
    name: str = "strict"
    answer_fallback: str = "none"  # strict: what extract_answer does when there is no final answer

    def __post_init__(self):
        if self.name not in GRADERS:
            raise ValueError(f"grader must be one of {GRADERS}, got {self.name!r}")
        if self.answer_fallback not in ANSWER_FALLBACKS:
            raise ValueError(f"answer_fallback must be one of {ANSWER_FALLBACKS}, got {self.answer_fallback!r}")

    def final_answer(self, response: str) -> str | None:
        """What a strict grader compares with the ground truth; None: no well-formed final answer (wrong)."""
        return extract_answer(response, self.answer_fallback)


# data-source prefix -> its grader; any other source: STRICT
DEFAULTS: dict[str, Grader] = {
    "math_dapo": Grader("math_dapo"),  # DAPO-Math-17k: the release's rules
    # the bundled demo set: its prompts ask for no answer format and SmolLM2 writes none, so its last number counts
    "sent_demo": Grader("strict", "last_number"),
}
STRICT = Grader()  # the toy task (sent_toy), AIME, AMC, MATH-500, Minerva, OlympiadBench, ...


def grader_for(data_source: str, name: str | None = None, answer_fallback: str | None = None) -> Grader:
    """The grader of `data_source` (DEFAULTS by prefix, else STRICT); `name` / `answer_fallback` override it."""
    default = next((grader for prefix, grader in DEFAULTS.items() if str(data_source).startswith(prefix)), STRICT)
    return Grader(name or default.name, answer_fallback or default.answer_fallback)
