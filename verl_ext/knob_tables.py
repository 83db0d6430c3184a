"""The knob tables of docs/scoring.md and docs/evaluation.md, rendered from the typed configs' fields, defaults and
field docstrings.

``python -m verl_ext.knob_tables [FILE ...]`` (default: both documents, ``DOCUMENTS``) rewrites every block between ``<!-- knobs: module.Class -->`` and ``<!-- /knobs -->``; ``--check`` only reports drift
(``tests/test_typed_configs.py`` fails on it), so a table can never disagree with the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import sys
from pathlib import Path
from typing import Any

from verl_ext.config import MISSING, field_docs, nested_config_type

# <!-- knobs: module.Class --> or <!-- knobs: module.Class same-as-scoring=model,vllm --> (sections shared with the
# scoring job's table, listed there once)
BLOCK = re.compile(
    r"(<!-- knobs: (?P<target>[\w.]+)(?: same-as-scoring=(?P<shared>[\w,]+))? -->\n)(?P<body>.*?)(<!-- /knobs -->)", re.S
)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING


def _fmt(value: Any) -> str:
    if isinstance(value, str) and value == MISSING:
        return "required"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, list):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def knob_rows(cls: type, prefix: str = "", instance: Any = None) -> list[tuple[str, str, str]]:
    """``(key, default, meaning)`` of every knob of ``cls``, nested configs flattened to dotted keys. ``instance``
    supplies the defaults when a parent overrides a nested config's (the evaluation's sampling)."""
    docs = field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = getattr(instance, f.name) if instance is not None else _default(f)
        nested = nested_config_type(cls, f.name)
        if nested is not None:
            doc = docs.get(f.name) or (nested.__doc__ or "").strip().split("\n\n")[0]
            if doc and not doc.startswith(nested.__name__ + "("):  # dataclasses invent a signature docstring
                rows.append((f"{prefix}{f.name}", "", " ".join(doc.split())))
            rows += knob_rows(nested, f"{prefix}{f.name}.", default)
        else:
            rows.append((f"{prefix}{f.name}", _fmt(default), docs.get(f.name, "")))
    return rows


def render_table(cls: type, shared: tuple[str, ...] = ()) -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, meaning in knob_rows(cls):
        section = key.split(".")[0]
        if section in shared:
            row = f"| `{section}.*` | | as for the scoring job |"
            if row not in lines:
                lines.append(row)
            continue
        lines.append(f"| `{key}` | {default} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


def _resolve(target: str) -> type:
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def render_readme(text: str) -> str:
    """``text`` with every knob block re-rendered from its class."""
    def block(m: re.Match) -> str:
        shared = tuple(m.group("shared").split(",")) if m.group("shared") else ()
        return m.group(1) + render_table(_resolve(m.group("target")), shared) + m.group(5)

    return BLOCK.sub(block, text)


DOCUMENTS = ("docs/scoring.md", "docs/evaluation.md")  # the documents that hold knob tables


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verl_ext.knob_tables", description=__doc__.split("\n\n")[0])
    p.add_argument("documents", nargs="*", default=list(DOCUMENTS))
    p.add_argument("--check", action="store_true", help="report drift, change nothing (exit 1 on drift)")
    a = p.parse_args(argv)
    drift = 0
    for path in map(Path, a.documents):
        text = path.read_text()
        new = render_readme(text)
        if new == text:
            continue
        if a.check:
            print(f"{path}: knob tables differ from the config classes; run python -m verl_ext.knob_tables {path}")
            drift = 1
            continue
        path.write_text(new)
        print(f"{path}: knob tables rewritten")
    return drift


if __name__ == "__main__":
    sys.exit(main())
