"""`python -m recipe.drivers.lab_archive <lab out> <docs folder>`: what a lab folder keeps in the repository.

A lab's folder (`recipe.drivers.lab`'s `out`) holds checkpoints, merged models and logs of several GB; the committed
record is what rebuilds its report (`tests/test_committed_toy_lab.py`) and what its reading quotes: `report.md`,
`curves.png`, `dose_response.png`, `se_hist.png`, and under `runs/` the data split, the scoring summary, the initial
model's evaluation and, per finished (variant, seed), `metrics.jsonl.gz`, `eval/heldout.json.gz`, `done.json` and
`settings.json`. Unfinished runs are left out and named. Re-running over the same docs folder adds what finished since
(a lab that spans sessions commits each finished part)."""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path

FIGURES = ("report.md", "curves.png", "dose_response.png")
RUN_FILES = {"metrics.jsonl": "metrics.jsonl.gz", "eval/heldout.json": "eval/heldout.json.gz", "done.json": "done.json",
             "settings.json": "settings.json"}


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".gz" and source.suffix != ".gz":
        # mtime 0: the same run gives the same bytes, so re-archiving changes nothing in git
        with source.open("rb") as raw, gzip.GzipFile(target, "wb", mtime=0) as packed:
            shutil.copyfileobj(raw, packed)
    else:
        shutil.copyfile(source, target)


def archive(out: Path, docs: Path) -> tuple[list[str], list[str]]:
    """Copy the lab in `out` to `docs`; returns (finished runs archived, unfinished runs left out) as
    `<variant>/seed<k>`."""
    if not (out / "data" / "eval.parquet").exists():
        raise SystemExit(f"{out}: not a lab folder (no data/eval.parquet)")
    for name in FIGURES:
        if (out / name).exists():
            _copy(out / name, docs / name)
    if (out / "scored" / "se_hist.png").exists():
        _copy(out / "scored" / "se_hist.png", docs / "se_hist.png")
    for name in ("train.parquet", "eval.parquet"):
        _copy(out / "data" / name, docs / "runs" / "data" / name)
    if (out / "scored" / "summary.json").exists():
        _copy(out / "scored" / "summary.json", docs / "runs" / "scored_summary.json")
    if (out / "baseline" / "eval" / "heldout.json").exists():
        _copy(out / "baseline" / "eval" / "heldout.json", docs / "runs" / "baseline" / "eval" / "heldout.json.gz")
    archived, unfinished = [], []
    for run in sorted(path.parent for path in out.glob("*/seed*/settings.json")):
        label = f"{run.parent.name}/{run.name}"
        if not (run / "done.json").exists():
            unfinished.append(label)
            continue
        for source, target in RUN_FILES.items():
            if (run / source).exists():
                _copy(run / source, docs / "runs" / label / target)
        archived.append(label)
    return archived, unfinished


def unpack(docs: Path, out: Path) -> Path:
    """The inverse of `archive` for its runs: `docs/runs/` back into a lab folder `out` (gzip undone), which
    `lab_report.build_report` reads as it read the lab's own."""
    for path in (docs / "runs").rglob("*"):
        if path.is_file():
            target = out / path.relative_to(docs / "runs")
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".gz":
                target.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
            else:
                shutil.copyfile(path, target)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the lab's output folder")
    parser.add_argument("docs", type=Path, help="where its record goes, e.g. docs/lab/toy/toy_8updates")
    args = parser.parse_args(argv)
    archived, unfinished = archive(args.out, args.docs)
    print(f"archived {len(archived)} finished runs to {args.docs}")
    if unfinished:
        print(f"left out, not finished: {', '.join(unfinished)}", file=sys.stderr)


if __name__ == "__main__":
    main()
