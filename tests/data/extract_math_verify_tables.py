"""Regenerate math_verify_tables.json from a Math-Verify checkout (run by hand; not a test).

    git clone https://github.com/huggingface/Math-Verify && git -C Math-Verify checkout <commit>
    python tests/data/extract_math_verify_tables.py Math-Verify > tests/data/math_verify_tables.json

Every ``@pytest.mark.parametrize`` table of (gold, pred, ...) string pairs in the files below becomes one table, cited
by repository, commit, path, line and test name. Only the strings are used by our tests: the third column is
Math-Verify's own expectation under its ``compare_strings`` extraction settings, kept for reference.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = "huggingface/Math-Verify"
FILES = [
    "tests/test_all.py",
    "tests/test_boxed.py",
    "tests/test_numina_cases.py",
    "tests/test_open_thoughts.py",
    "tests/test_yujianll.py",
    "tests/test_strict.py",
]


def tables(checkout: Path, path: str) -> list[dict]:
    out = []
    for node in ast.parse((checkout / path).read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if not (isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize"):
                continue
            names = [n.strip() for n in ast.literal_eval(deco.args[0]).split(",")]
            try:
                rows = ast.literal_eval(deco.args[1])
            except ValueError:  # built from code (e.g. sympy values), not a literal table
                continue
            if names[:2] != ["gold", "pred"]:
                continue
            pairs = [[r[0], r[1], r[2]] for r in rows if isinstance(r[0], str) and isinstance(r[1], str)]
            out.append({"test": node.name, "path": path, "line": deco.lineno, "columns": names[:3], "rows": pairs})
    return out


def main(checkout: str) -> None:
    root = Path(checkout)
    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    doc = {
        "source": {"repo": REPO, "commit": commit, "license": "MIT (Copyright (c) 2024 The HuggingFace Team)"},
        "tables": [t for path in FILES for t in tables(root, path)],
    }
    json.dump(doc, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
