"""Reading a verl-format input row: its chat messages and ground truth, or an error naming what is wrong.

Shared by the scoring job and the evaluation harness.
"""

from __future__ import annotations


class BadInputError(ValueError):
    """A bad input row or file; the message names the file and the row."""


def validate_row(row: dict, prompt_key: str) -> tuple[list[dict], str]:
    """(messages, ground_truth) of a verl-format row, or ValueError with the reason."""
    msgs = row.get(prompt_key)
    if msgs is None or (hasattr(msgs, "__len__") and len(msgs) == 0):
        raise ValueError(f"empty or missing prompt column {prompt_key!r}")
    if isinstance(msgs, str):
        msgs = [{"role": "user", "content": msgs}]
    msgs = list(msgs)
    for m in msgs:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"prompt is not a list of chat messages ({{role, content}}): {str(m)[:80]!r}")
    if not any(isinstance(m.get("content"), str) and m["content"].strip() for m in msgs):
        raise ValueError("prompt has no non-empty message content")
    rm = row.get("reward_model")
    gt = rm.get("ground_truth") if isinstance(rm, dict) else None
    if gt is None or (isinstance(gt, str) and not gt.strip()):
        raise ValueError("missing reward_model.ground_truth")
    return msgs, str(gt)
