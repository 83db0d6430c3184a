"""``LabConfig``: every knob of the SENT lab (``python -m recipe.drivers.lab``), its default, its check, and the
variants.

The defaults below are the only ones (``configs/lab.yaml`` takes its schema from this class). Each variant is a
preset plus a documented override set (``VARIANTS``), so any one of them is reproduced by hand with
``python -m recipe.sent.main_sent preset=<preset> <overrides>`` on the lab's shared settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from recipe.drivers.runs import BUNDLED_SOURCE, REGIMES, Regime
from verl_ext.config import ConfigError, TypedConfig, one_of

PRESETS = Path(__file__).resolve().parents[2] / "configs" / "preset"
POLICY_LOSS = "actor_rollout_ref.actor.policy_loss"

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
    # the positive controls (issue 27): established entropy-preserving changes to GRPO at their published settings
    "clip_higher": Variant("grpo", (*NO_CURRICULUM, "actor_rollout_ref.actor.clip_ratio_high=0.28"),
                           "GRPO with DAPO's clip-higher (epsilon_high 0.28, epsilon_low 0.2), prompts shuffled"),
    "entropy_bonus": Variant("grpo", (*NO_CURRICULUM, "actor_rollout_ref.actor.entropy_coeff=0.001"),
                             "GRPO with an entropy bonus of 0.001 (the SENT release's entropy-loss baseline), "
                             "prompts shuffled"),
    "sent": Variant("sent", CURRICULUM, "SENT: semantic-entropy curriculum + tiered token KL"),
    "sent_tokens_only": Variant("sent", NO_CURRICULUM, "SENT's token KL, prompts shuffled (no curriculum)"),
    "curriculum_only": Variant("grpo", CURRICULUM, "GRPO on the semantic-entropy curriculum"),
    "sent_low_only": Variant("sent", (*CURRICULUM, "actor_rollout_ref.actor.policy_loss.beta_high=0.05"),
                             "SENT with beta_high = beta_low = 0.05: no covariance tier"),
    "sent_released": Variant("sent_released", CURRICULUM, "the authors' released SENT scripts, on the curriculum"),
    "sent_released_tokens_only": Variant("sent_released", NO_CURRICULUM,
                                         "the authors' released SENT loss, prompts shuffled (no curriculum)"),
}


# ------------------------------------------------------------------------------------------------ dose-response
_ABSENT = object()


@cache
def _yaml(path: Path):
    from omegaconf import OmegaConf

    return OmegaConf.load(path)


def variant_setting(variant: Variant, key: str) -> Any:
    """What `variant` trains with at the dotted config `key`: its own override, else its preset's
    (configs/preset/<preset>.yaml), else the recipe's (configs/sent_trainer.yaml). A dose point is the variant with
    one value changed from this, so no published value is written twice."""
    import yaml
    from omegaconf import OmegaConf

    for item in reversed(variant.overrides):
        name, _, value = item.partition("=")
        if name == key:
            return yaml.safe_load(value)
    for source in (PRESETS / f"{variant.preset}.yaml", PRESETS.parent / "sent_trainer.yaml"):
        found = OmegaConf.select(_yaml(source), key, default=_ABSENT, throw_on_resolution_failure=False)
        if found is not _ABSENT:
            return found
    raise KeyError(f"{key}: set by neither the variant, its preset {variant.preset} nor configs/sent_trainer.yaml")


def _number(low: float, high: float | None = None) -> Callable[[Any], bool]:
    return lambda value: (isinstance(value, int | float) and not isinstance(value, bool) and value > low
                          and (high is None or value <= high))


@dataclass(frozen=True)
class DoseKnob:
    """One knob of the dose-response (`LabConfig.doses`): which values it takes, the dose variant's own value (its
    base point, `variant_setting`) and the overrides that set a value; `sent_loss`: only for variants of SENT's loss."""

    what: str
    allowed: str
    valid: Callable[[Any], bool]
    base: Callable[[Variant], Any]
    overrides: Callable[[Any, Variant], tuple[str, ...]]
    sent_loss: bool = True


DOSE_KNOBS: dict[str, DoseKnob] = {
    "kl_scale": DoseKnob(
        "SENT's KL strength: beta_high and beta_low both times this (1: the variant's own)", "a number > 0",
        _number(0), lambda variant: 1,
        lambda value, variant: tuple(f"{POLICY_LOSS}.{beta}={variant_setting(variant, f'{POLICY_LOSS}.{beta}') * value:g}"
                                     for beta in ("beta_high", "beta_low"))),
    "low_entropy_fraction": DoseKnob(
        "the share of tokens SENT penalises (its lowest-entropy ones)", "a number in (0, 1]", _number(0, 1),
        lambda variant: variant_setting(variant, f"{POLICY_LOSS}.low_entropy_fraction"),
        lambda value, variant: (f"{POLICY_LOSS}.low_entropy_fraction={value:g}",)),
    "kl_target": DoseKnob(
        "what SENT's KL pulls towards: ref (the reference model, as the paper writes it) or old (the rollout's "
        "policy, as the authors' release does)", "ref or old", lambda value: value in ("ref", "old"),
        lambda variant: variant_setting(variant, f"{POLICY_LOSS}.kl_target"),
        lambda value, variant: (f"{POLICY_LOSS}.kl_target={value}",)),
    "entropy_coeff": DoseKnob(
        "the entropy bonus (verl's actor.entropy_coeff), any variant", "a number >= 0",
        lambda value: value == 0 or _number(0)(value),
        lambda variant: variant_setting(variant, "actor_rollout_ref.actor.entropy_coeff"),
        lambda value, variant: (f"actor_rollout_ref.actor.entropy_coeff={value:g}",), sent_loss=False),
}


def dose_point_name(variant: str, knob: str, value: Any) -> str:
    """A dose point's run name (its folder and report row): `sent_tokens_only@kl_scale_10` (no `=`: the name is in
    the run's paths, which are Hydra override values)."""
    return f"{variant}@{knob}_{value:g}" if isinstance(value, int | float) else f"{variant}@{knob}_{value}"


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
    """variants to run, in order; known: grpo, kl_cov, clip_cov, clip_higher, entropy_bonus, sent, sent_tokens_only, curriculum_only, sent_low_only, sent_released"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """every variant trains on each seed (data order, vLLM sampling, curriculum shuffles: `runs.seed_overrides`) into <variant>/seed<k>/; the report's intervals are across them. On the CPU the same seed and settings log the same metrics, step for step, bitwise (timings and memory aside; tests/test_reproducible_run.py), so variants that differ only in the loss sample the same answers at step 1. What a seed does not fix (another machine, thread count, GPU kernels): docs/lab.md, Reproducibility"""
    doses: dict[str, Any] = field(default_factory=dict)
    """variant -> knob -> values: each variant also runs at each value of each knob, the others at its own settings, on every seed, after `variants` (its own value is the variant itself, run once). Knobs: kl_scale (beta_high and beta_low times this), low_entropy_fraction, kl_target (ref | old) for variants of SENT's loss; entropy_coeff for any. On the CLI with Hydra's + (doses starts empty), e.g. +doses.sent_tokens_only.kl_scale=[10,100] +doses.sent_tokens_only.kl_target=[old]; report.md gets a row per point and dose_response.png"""
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
    """a check of the whole path in minutes: sets model=toy (built from the tiny recipe, not measured), variants=[grpo, entropy_bonus, sent], doses={sent: {kl_scale: [10]}}, seeds=[0], steps=2, save_freq=1, scoring_samples=3, eval_samples=4, ks=[1, 2, 4], last_steps=1, toy_train_per_level=4, toy_heldout_per_level=3 (set none of these with it)"""

    def validate(self) -> None:
        if self.quick:
            self._apply_quick()
        unknown = [name for name in self.variants if name not in VARIANTS]
        if unknown or not self.variants:
            raise ConfigError(f"variants: unknown {unknown or 'none given'}; known: {', '.join(VARIANTS)}")
        one_of("machine", self.machine, MACHINES)
        self._check_doses()
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

    def _check_doses(self) -> None:
        sent_variants = [name for name, variant in VARIANTS.items()
                         if variant_setting(variant, f"{POLICY_LOSS}.loss_mode") == "sent"]
        for name, knobs in self.doses.items():
            one_of("doses: a variant", name, tuple(VARIANTS))
            if not isinstance(knobs, dict) or not knobs:
                raise ConfigError(f"doses.{name} must map knobs to values, e.g. +doses.{name}.kl_scale=[10,100]; "
                                  f"got {knobs!r}")
            for knob, values in knobs.items():
                key = f"doses.{name}.{knob}"
                if knob not in DOSE_KNOBS:
                    raise ConfigError(f"{key}: unknown knob {knob!r}; known: {', '.join(DOSE_KNOBS)}")
                if DOSE_KNOBS[knob].sent_loss and name not in sent_variants:
                    raise ConfigError(f"{key}: {knob} acts on SENT's loss, which {name} does not train with (those "
                                      f"that do: {', '.join(sent_variants)})")
                if not isinstance(values, list | tuple) or not values:
                    raise ConfigError(f"{key} must be a non-empty list of values; got {values!r}")
                bad = [value for value in values if not DOSE_KNOBS[knob].valid(value)]
                if bad or len(set(values)) != len(values):
                    raise ConfigError(f"{key}: each value {DOSE_KNOBS[knob].allowed}, each once; got {list(values)}")

    def dose_points(self) -> dict[str, list[tuple[Any, str]]]:
        """"<knob> (<variant>)" -> [(value, run name)], the variant's own value (the variant itself) included, in the
        order the values were given; empty without `doses`."""
        points = {}
        for name, knobs in self.doses.items():
            for knob, values in knobs.items():
                base = DOSE_KNOBS[knob].base(VARIANTS[name])
                points[f"{knob} ({name})"] = [(value, name if value == base else dose_point_name(name, knob, value))
                                              for value in ([] if base in values else [base]) + list(values)]
        return points

    def run_names(self) -> list[str]:
        """Every variant the lab trains, in order: `variants`, then each dose's variant and its points."""
        names = list(self.variants)
        for points in self.dose_points().values():
            names += [name for _, name in points if name not in names]
        return names

    def run_variants(self) -> dict[str, Variant]:
        """`run_names` with each one's Variant: what the report lists."""
        return {name: self.variant(name) for name in self.run_names()}

    def variant(self, name: str) -> Variant:
        """A variant of VARIANTS or a dose point (its variant plus the knob's overrides)."""
        if name in VARIANTS:
            return VARIANTS[name]
        for variant, knobs in self.doses.items():
            for knob, values in knobs.items():
                for value in values:
                    if dose_point_name(variant, knob, value) == name:
                        base = VARIANTS[variant]
                        extra = DOSE_KNOBS[knob].overrides(value, base)
                        # the knob's keys replace the variant's own (its entropy_coeff=0.001 is not kept beside)
                        keys = {item.split("=", 1)[0] for item in extra}
                        kept = tuple(item for item in base.overrides if item.split("=", 1)[0] not in keys)
                        return Variant(base.preset, (*kept, *extra), f"{variant} with {knob}={value}")
        raise KeyError(name)

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


# one control (the entropy bonus: its entropy is computed with a gradient) and a dose-response of two points (sent
# itself and sent at 10x its KL), so that CI runs every kind of lab run
QUICK = {"model": "toy", "variants": ["grpo", "entropy_bonus", "sent"], "doses": {"sent": {"kl_scale": [10]}},
         "seeds": [0], "steps": 2, "save_freq": 1, "scoring_samples": 3,
         "eval_samples": 4, "ks": [1, 2, 4], "last_steps": 1, "toy_train_per_level": 4, "toy_heldout_per_level": 3}
