"""A model path as a user types it: a local folder, or a Hugging Face Hub id that the loader can actually get.

Anything else fails at start with one line naming the key and the path, instead of the loader's "Repo id must be in
the form 'repo_name' or 'namespace/repo_name'" traceback minutes later (after Ray, vLLM or the input files). A hub id
is also checked against what this node can reach (docs/offline.md): with ``HF_HUB_OFFLINE=1`` it must be in the
Hugging Face cache; without it the hub must answer (one request, no retries, ``HF_HUB_ETAG_TIMEOUT`` seconds at most)
or the one line says how to go on: a local folder, or the cache filled on a node with network and HF_HUB_OFFLINE=1.
Shared by the scoring job, the evaluation harness, their tokenizer loader and ``main_sent``; ``verl_ext.data_prep``
uses the same hub probe for the data sets.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from verl_ext.config import ConfigError

__all__ = ["HUB_ID", "check_model_available", "check_model_path", "hub_cache_dir", "hub_endpoint", "hub_offline",
           "hub_unreachable"]  # fmt: skip

# "org/name": a Hub id, resolved by the loader (check_model_available: if this node can get it); else a folder.
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# Files whose presence in the cache (refs/main's snapshot) marks a hub model as downloaded: weights' or tokenizer's.
CACHE_MARKERS = ("config.json", "tokenizer_config.json")
_TRUE = {"1", "ON", "YES", "TRUE"}
_unreachable: dict[str, str | None] = {}  # endpoint -> why it could not be reached (None: it answered)


def check_model_path(key: str, path: str | None) -> None:
    """Raise ``ConfigError`` naming ``key`` unless ``path`` is unset, exists on disk, or has the form of a Hub id."""
    if path and not Path(str(path)).expanduser().exists() and not HUB_ID.match(str(path)):
        raise ConfigError(f"{key}={path}: no such model folder (and not a hub id like 'Qwen/Qwen2.5-7B')")


def check_model_available(key: str, path: str | None) -> None:
    """``check_model_path``, and for a hub id that is not a folder here: raise ``ConfigError`` (one line naming
    ``key``, the id and what to do) unless the loader can get it: in the cache under HF_HUB_OFFLINE=1, else from a
    hub that answers (a cached copy with an unreachable hub: set HF_HUB_OFFLINE=1, or every file waits for retries)."""
    check_model_path(key, path)
    if not path or Path(str(path)).expanduser().exists():
        return
    path = str(path)
    cached = _in_cache(path)
    fill = (f"pass a local model folder, or fill the cache on a node with network (`hf download {path}`, same "
            "HF_HOME) and set HF_HUB_OFFLINE=1; see docs/offline.md")  # fmt: skip
    if hub_offline():
        if not cached:
            raise ConfigError(f"{key}={path}: not a local folder, and HF_HUB_OFFLINE=1 but the model is not in the "
                              f"Hugging Face cache ({hub_cache_dir()}): {fill}")  # fmt: skip
        return
    reason = hub_unreachable(path)
    if reason is None:
        return
    if cached:
        raise ConfigError(f"{key}={path}: the Hugging Face hub ({hub_endpoint()}) is unreachable ({reason}); the "
                          f"model is in the cache ({hub_cache_dir()}): set HF_HUB_OFFLINE=1 to load it from "
                          "there")  # fmt: skip
    raise ConfigError(f"{key}={path}: not a local folder, and the Hugging Face hub ({hub_endpoint()}) is unreachable "
                      f"({reason}): {fill}")  # fmt: skip


# ------------------------------------------------------------------------------------------------ the hub, here
def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), as huggingface_hub read it at import or as the environment says now."""
    from huggingface_hub import constants

    now = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper() in _TRUE
    return bool(constants.HF_HUB_OFFLINE) or now


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _in_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in CACHE_MARKERS)


def hub_unreachable(repo_id: str, repo_type: str = "model") -> str | None:
    """Why the hub cannot be reached from here (``"ConnectError: [Errno 111] Connection refused"``), or None when it
    answers (any HTTP status: a missing or gated repo is the loader's to report). One request without retries, at
    most HF_HUB_ETAG_TIMEOUT seconds; the answer is kept per endpoint for the life of the process."""
    endpoint = hub_endpoint()
    if endpoint not in _unreachable:
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session

        timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT", constants.HF_HUB_ETAG_TIMEOUT))
        kind = {"model": "models", "dataset": "datasets", "space": "spaces"}[repo_type]
        try:
            get_session().head(f"{endpoint}/api/{kind}/{repo_id}", timeout=timeout)
            _unreachable[endpoint] = None
        except Exception as exc:  # noqa: BLE001 - any transport failure (DNS, refused, timeout, proxy, TLS)
            text = " ".join(str(exc).split()) or "no answer"
            _unreachable[endpoint] = f"{type(exc).__name__}: {text[:160]}"
    return _unreachable[endpoint]
