"""``LabConfig``: every knob of the SENT lab (``python -m recipe.drivers.lab``), its default, its check, and the
variants.

The defaults below are the only ones (``configs/lab.yaml`` takes its schema from this class). Each variant is a
preset plus a documented override set (``VARIANTS``), so any one of them is reproduced by hand with
``python -m recipe.sent.main_sent preset=<preset> <overrides>`` on the lab's shared settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recipe.drivers.runs import BUNDLED_SOURCE, REGIMES, Regime
from verl_ext.config import ConfigError, TypedConfig, one_of

NO_CURRICULUM = ("data.curriculum.enable=false", "data.shuffle=true")
CURRICULUM = ("data.curriculum.enable=true", "data.shuffle=false")


@dataclass(frozen=True)
class Variant:
    preset: str
    overrides: tuple[str, ...]
    what: str


# name -> the preset and the overrides that make it this variant; everything else is shared by all variants
VARIANTS: dict[str, Variant] = {
    "grpo": Variant("grpo", NO_CURRICULUM, "GRPO: clipped surrogate + uniform KL 0.001, prompts shuffled"),
    "kl_cov": Variant("kl_cov", NO_CURRICULUM, "verl's KL-Cov, prompts shuffled"),
    "clip_cov": Variant("clip_cov", NO_CURRICULUM, "verl's Clip-Cov, prompts shuffled"),
    "sent": Variant("sent", CURRICULUM, "SENT: semantic-entropy curriculum + tiered token KL"),
    "sent_tokens_only": Variant("sent", NO_CURRICULUM, "SENT's token KL, prompts shuffled (no curriculum)"),
    "curriculum_only": Variant("grpo", CURRICULUM, "GRPO on the semantic-entropy curriculum"),
    "sent_low_only": Variant("sent", (*CURRICULUM, "actor_rollout_ref.actor.policy_loss.beta_high=0.05"),
                             "SENT with beta_high = beta_low = 0.05: no covariance tier"),
    "sent_released": Variant("sent_released", CURRICULUM, "the authors' released SENT scripts, on the curriculum"),
}


DEFAULT_REGIME = Regime(steps=12, overrides=())
# quick=true: the tiny toy's few prompts fill small steps (its steps come from QUICK)
QUICK_REGIME = Regime(steps=2, overrides=("data.train_batch_size=8", "actor_rollout_ref.rollout.n=4"))
DEFAULT_VARIANTS = ("grpo", "kl_cov", "sent", "sent_tokens_only", "curriculum_only")
MODELS = ("smollm2", "tiny", "toy")
MACHINES = ("auto", "cpu", "gpu")


@dataclass
class LabConfig(TypedConfig):
    """The lab: one training run per variant on the same data, seeds, steps and sizes, then held-out evaluation."""

    out: str = "runs/lab"
    """output folder: data/, scored/, baseline/, <variant>/, report.md, curves.png; re-running resumes in it"""
    model: str = "smollm2"
    """smollm2 (SmolLM2-135M-Instruct, bundled) | tiny (the tiny random Qwen2, path checks only) | toy (the toy reasoner, verl_ext/toy_model.py: its shipped reference weights) | an HF folder"""
    cache: str = ".cache/models"
    """where smollm2 / tiny / toy are converted, built or (toy: the shipped weights) installed once"""
    machine: str = "auto"
    """auto (gpu when torch sees CUDA and vLLM is installed, else cpu) | cpu | gpu"""
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    """variants to run, in order; known: grpo, kl_cov, clip_cov, sent, sent_tokens_only, curriculum_only, sent_low_only, sent_released"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """every variant trains on each seed (data order, vLLM sampling, curriculum shuffles: `runs.seed_overrides`) into <variant>/seed<k>/; the report's intervals are across them"""
    regime_name: str | None = None
    """the settings every variant shares (runs.REGIMES): null = the model's (toy: toy, 2 optimizer updates a step; others: lr 1e-5, 4 x 4); toy_8updates: the toy's at the anchors' 8 updates a step"""
    steps: int | None = None
    """training steps of every variant; null: the regime's (REGIMES: toy 24, others 12)"""
    save_freq: int = 4
    """checkpoint every N steps (and at the last step): how much a killed variant redoes"""
    scoring_samples: int = 8
    """answers per train prompt for semantic entropy"""
    max_tokens: int = 64
    """new tokens per answer when scoring and evaluating (training: 64 as well)"""
    eval_samples: int = 8
    """answers per held-out problem"""
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    """pass@k and avg@k for these k (each <= eval_samples)"""
    eval_every: int = 4
    """every eval_every-th problem of each difficulty level is held out (never trains)"""
    toy_train_per_level: int = 32
    """model=toy: train problems at each trained level (toy_task.TRAIN_LEVELS)"""
    toy_heldout_per_level: int = 72
    """model=toy: held-out problems at each trained level and at the harder held-out level (7 levels x 72 = 504), never trained; other models hold out every eval_every-th bundled problem"""
    reward_target: float = 0.2
    """efficiency: the report gives the steps and seconds each run needs until its train reward (critic/score/mean, +1 right / -1 wrong) first reaches this"""
    last_steps: int = 4
    """the report's train reward is the mean over this many last steps"""
    train_overrides: list[str] = field(default_factory=list)
    """main_sent overrides for every variant, after the lab's sizes and before the variant's own, e.g. 'train_overrides=["data.train_batch_size=64","actor_rollout_ref.rollout.n=8"]' to scale up (each item quoted: Hydra's grammar rejects an unquoted = inside a list)"""
    parallel: int | None = None
    """(variant, seed) runs trained at once, each in its own Ray cluster, their weight syncs one at a time (recipe/sent/weight_sync_lock.py); null: the model's regime's on machine=cpu (toy: 2, others 1), 1 on machine=gpu (a run takes every GPU)"""
    timeout_s: float = 3600.0
    """deadline of one variant's training run"""
    stall_s: float = 900.0
    """a training run that logs no step for this long (start-up included) is stopped and marked failed; re-running the lab resumes it from its last checkpoint (a Ray actor killed by the memory monitor leaves verl's loop waiting forever)"""
    keep_checkpoints: bool = False
    """false: a finished variant's checkpoints are removed once merged and evaluated (its HF folder stays)"""
    quick: bool = False
    """a check of the whole path in minutes: sets model=toy (built from the tiny recipe, not measured), variants=[grpo, sent], seeds=[0], steps=2, save_freq=1, scoring_samples=3, eval_samples=4, ks=[1, 2, 4], last_steps=1, toy_train_per_level=4, toy_heldout_per_level=3 (set none of these with it)"""

    def validate(self) -> None:
        if self.quick:
            self._apply_quick()
        unknown = [name for name in self.variants if name not in VARIANTS]
        if unknown or not self.variants:
            raise ConfigError(f"variants: unknown {unknown or 'none given'}; known: {', '.join(VARIANTS)}")
        one_of("machine", self.machine, MACHINES)
        if self.regime_name is not None:
            one_of("regime_name", self.regime_name, tuple(REGIMES))
        if self.steps is None:
            self._normalise("steps", self.regime().steps)
        for key in ("steps", "save_freq", "scoring_samples", "eval_samples", "eval_every", "last_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1; got {getattr(self, key)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(seed < 0 for seed in self.seeds):
            raise ConfigError(f"seeds must be distinct integers >= 0, at least one; got {self.seeds}")
        if self.parallel is not None and self.parallel < 1:
            raise ConfigError(f"parallel must be >= 1 or null; got {self.parallel}")
        for key in ("toy_train_per_level", "toy_heldout_per_level"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1; got {getattr(self, key)}")
        if self.eval_every < 2:
            raise ConfigError("eval_every must be >= 2 (1 would hold out every problem)")
        bad = [item for item in self.train_overrides if "=" not in item]
        if bad:
            raise ConfigError(f"train_overrides: each item is key=value (a main_sent override); got {bad}")
        if not self.ks or any(k < 1 or k > self.eval_samples for k in self.ks):
            raise ConfigError(f"ks must be non-empty, each k in 1..eval_samples={self.eval_samples}; got {self.ks}")

    def data_source(self) -> str:
        """The data source of the lab's rows (the toy task's, else the bundled set's): it picks the grader
        (`verl_ext.grading`) of the reward, the scoring, the per-step semantic entropy and the evaluation."""
        from verl_ext import toy_task

        return toy_task.DATA_SOURCE if self.model == "toy" else BUNDLED_SOURCE

    def regime(self) -> Regime:
        if self.quick:
            return QUICK_REGIME
        return REGIMES[self.regime_name] if self.regime_name else REGIMES.get(self.model, DEFAULT_REGIME)

    def workers(self, machine: str) -> int:
        """Runs at once: `parallel`, else the regime's on the CPU and 1 on a GPU machine (`machine`: cpu | gpu)."""
        if self.parallel is not None:
            return self.parallel
        return self.regime().cpu_parallel if machine == "cpu" else 1

    def _apply_quick(self) -> None:
        defaults = LabConfig.__dataclass_fields__
        for key, value in QUICK.items():
            default = defaults[key].default_factory() if callable(defaults[key].default_factory) else defaults[key].default
            if getattr(self, key) != default:
                raise ConfigError(f"quick=true sets {key}={value}; leave {key} out or drop quick=true")
            self._normalise(key, value)


QUICK = {"model": "toy", "variants": ["grpo", "sent"], "seeds": [0], "steps": 2, "save_freq": 1, "scoring_samples": 3,
         "eval_samples": 4, "ks": [1, 2, 4], "last_steps": 1, "toy_train_per_level": 4, "toy_heldout_per_level": 3}
