"""A model path as a user types it: a local folder, or a Hugging Face Hub id that the loader resolves later.

Anything else fails at start with one line naming the key and the path, instead of the loader's "Repo id must be in
the form 'repo_name' or 'namespace/repo_name'" traceback minutes later (after Ray, vLLM or the input files).
Shared by the scoring job, the evaluation harness and ``main_sent``.
"""

from __future__ import annotations

import re
from pathlib import Path

from verl_ext.config import ConfigError

__all__ = ["HUB_ID", "check_model_path"]

# "org/name": a Hub id, resolved (and its errors reported) by the loader; anything else must exist on disk.
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def check_model_path(key: str, path: str | None) -> None:
    """Raise ``ConfigError`` naming ``key`` unless ``path`` is unset, exists on disk, or is a Hub id."""
    if path and not Path(str(path)).expanduser().exists() and not HUB_ID.match(str(path)):
        raise ConfigError(f"{key}={path}: no such model folder (and not a hub id like 'Qwen/Qwen2.5-7B')")
