#!/usr/bin/env python3
"""Prepare the paper's data as verl parquet (run as a file: `python scripts/prepare_data.py ...`).

    python scripts/prepare_data.py --out-dir data                          # all 7 sets from the HF hub
    python scripts/prepare_data.py --out-dir data --from-dir raw           # from local copies
    python scripts/prepare_data.py --out-dir data --only aime24 math500  # a subset
    python scripts/prepare_data.py --validate data/eval/aime24.parquet   # check an existing file

Writes <out-dir>/dapo_math_17k.parquet (train, deduplicated by prompt) and <out-dir>/eval/<name>.parquet for aime24,
aime25, amc23, math500, minerva, olympiadbench. The table of sources is verl_ext/data_prep.py: SOURCES.
Without the hub (no network, or HF_HUB_OFFLINE=1 and an empty cache) it stops in one line naming the set and the way on
(--from-dir, or HF_HUB_OFFLINE=1 with a filled cache): docs/offline.md.
(The verl wheel installs a top-level package named `scripts`; this file imports only from verl_ext.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, also when not pip-installed
from verl_ext.data_prep import SOURCES, DataPrepError, prepare, validate_parquet  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="data", help="output directory (default: data)")
    parser.add_argument("--from-dir", default=None, metavar="DIR", help=(
        "read local copies under DIR instead of the hub: DIR/<name>.parquet|.jsonl|.json|.csv, DIR/<name>/, or a "
        "clone DIR/<repo name>/[<config>/] (docs/offline.md)"))  # fmt: skip
    parser.add_argument("--only", nargs="+", choices=list(SOURCES), default=None, help="datasets to prepare")
    parser.add_argument("--cache-dir", default=None, help="datasets cache dir for the hub path")
    parser.add_argument("--validate", nargs="+", metavar="PARQUET", help="only validate existing verl parquet files")
    parser.add_argument("--list", action="store_true", help="print the table of sources and exit")
    args = parser.parse_args(argv)

    try:
        if args.list:
            for s in SOURCES.values():
                config = f" [{s.config}]" if s.config else ""
                print(
                    f"{s.name:14} {s.role:5} {s.hub_id}{config}:{s.split}  q={s.question} a={s.answer}  "
                    f"data_source={s.data_source}"
                )
            return 0
        if args.validate:
            for path in args.validate:
                print(f"{path}: {validate_parquet(path)} rows OK")
            return 0
        prepare(args.only or list(SOURCES), args.out_dir, from_dir=args.from_dir, cache_dir=args.cache_dir)
    except DataPrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
