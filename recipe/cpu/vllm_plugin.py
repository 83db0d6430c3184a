"""vLLM's general-plugin hook (`vllm.general_plugins` entry point `sent_cpu`): vLLM calls `register` in each of its
own processes (API server, engine core, workers), on this machine whether or not a CPU run was selected, so it does
nothing unless `SENT_CPU_LAYER=1`."""

from __future__ import annotations

import os


def register() -> None:
    if os.environ.get("SENT_CPU_LAYER") == "1":
        from recipe.cpu.patches import apply_vllm_changes

        apply_vllm_changes()
