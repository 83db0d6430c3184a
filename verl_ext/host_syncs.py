"""Where a function makes the host wait for a CUDA device (`torch.cuda.set_sync_debug_mode`), attributed to code.

torch reports each synchronizing call (`.item()`, `nonzero`, boolean indexing, a `.cpu()` copy, ...) as a warning
in the "warn" mode and raises in the "error" mode, but either way names the innermost Python line, often inside
torch itself. `host_syncs` records every one with its whole Python stack and names the innermost frame outside torch
and tensordict: the code that asked for the sync. A sync inside torch's nested-tensor metadata (the first
`to_padded_tensor` of a jagged tensor reads its longest length back once) is kept apart as `layout`: verl's own
`ppo_loss` pays it for each field it pads, and it is not arithmetic.
"""

from __future__ import annotations

import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

LIBRARY_PARTS = ("/torch/", "/tensordict/", "/warnings.py", "/contextlib.py", "/functools.py")
# torch's text for a sync, warned or raised (c10/cuda). Not "synchroniz": set_sync_debug_mode's own one-time warning
# ("... does not yet detect all synchronizing operations") would count as a sync of the first caller.
SYNC_MESSAGE = "called a synchronizing CUDA operation"


def is_sync_message(text: str) -> bool:
    return SYNC_MESSAGE in text


def owner_frame(stack: list[traceback.FrameSummary]) -> str:
    """`file:line` of the innermost frame outside torch/tensordict/the stdlib plumbing and this module."""
    for frame in reversed(stack):
        path = frame.filename.replace("\\", "/")
        if path.endswith("/host_syncs.py") or any(part in path for part in LIBRARY_PARTS):
            continue
        return f"{_short(path)}:{frame.lineno}"
    return "<torch>"


def sync_kind(stack: list[traceback.FrameSummary]) -> str:
    """`layout` when torch's nested-tensor code asked (a jagged tensor's max length, read once), else `op`."""
    return "layout" if any("/torch/nested/" in frame.filename.replace("\\", "/") for frame in stack) else "op"


def host_syncs(fn: Callable[[], object]) -> Counter:
    """Run `fn` (on a CUDA device) in sync debug mode "warn"; return how many syncs each (`file:line`, kind) asked
    for (kind: `sync_kind`)."""
    import torch

    found: Counter = Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        if is_sync_message(str(message)):
            stack = traceback.extract_stack()[:-1]
            found[(owner_frame(stack), sync_kind(stack))] += 1

    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
            torch.cuda.synchronize()  # the device finished: later syncs are not this function's
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return found


def raises_in_error_mode(fn: Callable[[], object]) -> str | None:
    """Run `fn` under `set_sync_debug_mode("error")`; None when it finished without a host sync, else where it
    stopped (`file:line` of the code that asked, and torch's message)."""
    import torch

    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
    except RuntimeError as error:
        if not is_sync_message(str(error)):
            raise
        return f"{owner_frame(traceback.extract_tb(error.__traceback__))}: {str(error).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return None


def _short(path: str) -> str:
    """site-packages/verl/... -> verl/...; this checkout's files relative to it."""
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1]
    root = str(Path(__file__).resolve().parents[1]).replace("\\", "/") + "/"
    return path[len(root):] if path.startswith(root) else path
