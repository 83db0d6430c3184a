"""Which attention the trainer's model loads with, decided once at start (flash-attn is optional).

verl 0.9.1 loads the actor, reference and critic models with `override_config.attn_implementation`, defaulting to
`flash_attention_2` (`verl/workers/config/model.py`, `HFModelConfig.__post_init__`). flash-attn has no wheel on PyPI
(source only, hours to build), so a cluster install may lack it; the run then falls back to `sdpa`.

`use_remove_padding` stays as configured: verl's remove-padding path packs the sequences itself (nested tensors,
`verl/workers/engine/fsdp/transformer_impl.py`; `flash_attn.bert_padding` is only used when importable,
`verl/utils/attention_utils.py`) and transformers' sdpa masks packed sequences by their position ids, with a (tokens x
tokens) mask over the micro-batch (so `machine=cpu` sets it off: padded rows, attention per sequence). Ulysses sequence parallelism is the exception: verl implements it inside
transformers' flash-attention forward only (`verl/models/transformers/monkey_patch.py`), so it needs flash-attn.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import OmegaConf, open_dict

VERL_DEFAULT = "flash_attention_2"  # what verl loads when override_config has no attn_implementation
FLASH = "flash_attention_2"
FALLBACK = "sdpa"
# model sections verl loads a Hugging Face model from, with the actor's Ulysses size for each
MODEL_SECTIONS = (("actor_rollout_ref.model", "actor_rollout_ref.actor"), ("critic.model", "critic"))


@dataclass(frozen=True)
class AttentionChoice:
    implementation: str
    why: str


def flash_attn_status() -> tuple[bool, str]:
    """(importable, version or the import error). Any exception counts: a wheel built for another torch or CUDA
    fails with an undefined symbol (ImportError/OSError), not ModuleNotFoundError."""
    try:
        import flash_attn
    except Exception as error:  # noqa: BLE001 - any failure to import means it cannot be used
        return False, f"{type(error).__name__}: {error}"
    return True, f"flash-attn {getattr(flash_attn, '__version__', '?')}"


def choose_attention(requested: str | None, *, flash_attn: tuple[bool, str], ulysses_size: int = 1) -> AttentionChoice:
    """The attention implementation to load with. `requested` is `override_config.attn_implementation` (None: verl's
    default); `flash_attn` is `flash_attn_status()`. Raises ValueError when flash-attn is needed and missing."""
    implementation = requested or VERL_DEFAULT
    importable, detail = flash_attn
    source = "verl's default" if requested is None else "configured"
    if implementation != FLASH:
        return AttentionChoice(implementation, source)
    if importable:
        return AttentionChoice(FLASH, f"{source}; {detail}")
    if ulysses_size > 1:
        raise ValueError(
            f"ulysses_sequence_parallel_size={ulysses_size} needs flash-attn (verl implements Ulysses inside "
            f"transformers' flash-attention forward), which is not importable ({detail}): install flash-attn or set "
            "ulysses_sequence_parallel_size=1"
        )
    return AttentionChoice(FALLBACK, f"instead of {FLASH}, {source}: flash-attn is not importable, {detail}")


def apply_attention_choice(config, flash_attn: tuple[bool, str] | None = None) -> str:
    """Set `override_config.attn_implementation` of every model section in `config` to the choice, and return the
    one log line that says what was chosen and why."""
    flash_attn = flash_attn_status() if flash_attn is None else flash_attn
    choices = {}
    for model_key, owner_key in MODEL_SECTIONS:
        model = OmegaConf.select(config, model_key)
        if model is None or "override_config" not in model:
            continue
        owner = OmegaConf.select(config, owner_key)
        ulysses = int(owner.get("ulysses_sequence_parallel_size", 1) or 1) if owner is not None else 1
        requested = model.override_config.get("attn_implementation", None)
        try:
            choice = choose_attention(requested, flash_attn=flash_attn, ulysses_size=ulysses)
        except ValueError as error:
            raise ValueError(f"{owner_key}: {error}") from None
        with open_dict(model.override_config):
            model.override_config.attn_implementation = choice.implementation
        choices[model_key] = choice
    actor = choices.get("actor_rollout_ref.model")
    if actor is None:
        return "attention: no model section found"
    return (f"attention: {actor.implementation} ({actor.why}); use_remove_padding="
            f"{OmegaConf.select(config, 'actor_rollout_ref.model.use_remove_padding')}")

