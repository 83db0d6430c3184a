"""The paper's data as verl parquet: DAPO-Math-17k for training, six math benchmarks for evaluation.

    python scripts/prepare_data.py --out-dir data                     # from the Hugging Face hub
    # -> data/dapo_math_17k.parquet (train) and data/eval/{aime24,aime25,amc23,math500,minerva,olympiadbench}.parquet
    python scripts/prepare_data.py --out-dir data --from-dir raw/     # from local copies (no network: docs/offline.md)

Every output row has verl's RL layout (`verl.utils.dataset.rl_dataset.RLHFDataset`, reward managers):

    data_source   str                      routes the reward (recipe/sent/reward.py)
    prompt        [{"role": "user", "content": "<question>\\n" + INSTRUCTION}]
    ability       "math"
    reward_model  {"style": "rule", "ground_truth": str}
    extra_info    {"split": "train"|"test", "index": int, "source": hub id, "question": str, "answer": str}

Pure Python / pandas / pyarrow; `datasets` is imported only for the hub path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

# The paper's prompt (sent-method notes §10: the OpenCompass configs of the release), used for training and eval.
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
ABILITY = "math"

# DAPO-Math-17k ships its questions already wrapped in DAPO's "Answer:" instruction; we strip it and apply ours.
DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


@dataclass(frozen=True)
class Source:
    name: str  # output file stem: <out_dir>/<name>.parquet
    hub_id: str
    config: str | None  # hub config (subset) name
    split: str  # hub split
    question: str  # question column
    answer: str  # answer column
    data_source: str  # written to `data_source`; the reward routes on it
    role: str  # "train" or "test" (extra_info.split)


# THE TABLE of source datasets (hub id, config, split, question / answer columns, data_source).
# DAPO-Math-17k: question = prompt[0].content minus DAPO's wrapper, answer = reward_model.ground_truth.
# OlympiadBench: final_answer is a list (joined with ', '); a non-empty `context` is prepended to the question.
SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("dapo_math_17k", "BytedTsinghua-SIA/DAPO-Math-17k", None, "train", "prompt", "reward_model", "math_dapo", "train"),  # noqa: E501
        Source("aime24", "HuggingFaceH4/aime_2024", None, "train", "problem", "answer", "aime24", "test"),
        Source("aime25", "math-ai/aime25", None, "test", "problem", "answer", "aime25", "test"),
        Source("amc23", "math-ai/amc23", None, "test", "question", "answer", "amc23", "test"),
        Source("math500", "HuggingFaceH4/MATH-500", None, "test", "problem", "answer", "math500", "test"),
        Source("minerva", "math-ai/minervamath", None, "test", "question", "answer", "minerva", "test"),
        Source("olympiadbench", "Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train", "question", "final_answer", "olympiadbench", "test"),  # noqa: E501
    )
}  # fmt: skip
TRAIN_SOURCES = ("dapo_math_17k",)
EVAL_SOURCES = tuple(name for name in SOURCES if name not in TRAIN_SOURCES)

REQUIRED_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")
LOCAL_EXTENSIONS = (".parquet", ".jsonl", ".json", ".csv")


class DataPrepError(ValueError):
    """A source or output file does not have the expected layout; the message names the file and the row."""


# ----------------------------------------------------------------------------------------------- question / answer
def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def strip_dollars(answer: str) -> str:
    """`$\\frac{1}{2}$` -> `\\frac{1}{2}` (OlympiadBench writes answers as inline math)."""
    answer = answer.strip()
    while len(answer) >= 2 and answer.startswith("$") and answer.endswith("$"):
        answer = answer[1:-1].strip()
    return answer


def canonical_answer(value: Any) -> str:
    """Ground truth as a string: lists (OlympiadBench's final_answer) are joined with ', ', numbers lose '.0'."""
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return ", ".join(strip_dollars(_text(v)) for v in value if _text(v))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return strip_dollars(_text(value))


def dapo_question(prompt: Any) -> str:
    """The bare question from a DAPO-Math-17k row's chat prompt (DAPO's instruction wrapper removed)."""
    if hasattr(prompt, "tolist") and not isinstance(prompt, str):
        prompt = prompt.tolist()
    if isinstance(prompt, (list, tuple)):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role", "user") == "user"]
        text = _text(users[-1].get("content")) if users else ""
    else:
        text = _text(prompt)
    if text.startswith(DAPO_PREFIX.strip()):
        text = text[len(DAPO_PREFIX.strip()) :]
    suffix = DAPO_SUFFIX.strip()
    if text.rstrip().endswith(suffix):
        text = text.rstrip()[: -len(suffix)]
    return text.strip()


def make_prompt(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{question}\n{INSTRUCTION}"}]


def _question_and_answer(source: Source, row: dict) -> tuple[str, str]:
    if source.name == "dapo_math_17k":
        reward_model = row.get(source.answer)
        answer = reward_model.get("ground_truth") if isinstance(reward_model, dict) else row.get("answer")
        return dapo_question(row.get(source.question)), canonical_answer(answer)
    question = _text(row.get(source.question))
    if source.name == "olympiadbench" and _text(row.get("context")):
        question = f"{_text(row.get('context'))}\n{question}"  # some problems state shared context separately
    return question, canonical_answer(row.get(source.answer))


# ------------------------------------------------------------------------------------------------------- convert
def convert(source: Source, records: Iterable[dict], origin: str = "<records>") -> pd.DataFrame:
    """Source rows (the hub's column layout) -> verl rows. Fails naming `origin` and the row on a bad row.
    The training set is deduplicated by question (first occurrence kept): DAPO-Math-17k repeats each prompt."""
    rows, seen = [], set()
    for i, row in enumerate(records):
        missing = [c for c in (source.question, source.answer) if c not in row]
        if missing:
            raise DataPrepError(f"{origin}: row {i}: missing column(s) {missing} for {source.name} ({source.hub_id})")
        question, answer = _question_and_answer(source, row)
        if not question:
            raise DataPrepError(f"{origin}: row {i}: empty question ({source.name}, column {source.question!r})")
        if not answer:
            raise DataPrepError(f"{origin}: row {i}: empty answer ({source.name}, column {source.answer!r})")
        if source.role == "train":
            if question in seen:
                continue
            seen.add(question)
        rows.append(
            {
                "data_source": source.data_source,
                "prompt": make_prompt(question),
                "ability": ABILITY,
                "reward_model": {"style": "rule", "ground_truth": answer},
                "extra_info": {
                    "split": source.role,
                    "index": len(rows),
                    "source": source.hub_id,
                    "source_row": i,
                    "question": question,
                    "answer": answer,
                },
            }
        )
    if not rows:
        raise DataPrepError(f"{origin}: no rows for {source.name}")
    return pd.DataFrame(rows, columns=list(REQUIRED_COLUMNS))


# ------------------------------------------------------------------------------------------------------ validate
def validate_rows(rows: Sequence[dict], origin: str) -> None:
    """Check verl's RL layout row by row; raise DataPrepError naming `origin` and the first bad row."""
    for i, row in enumerate(rows):
        where = f"{origin}: row {i}"
        missing = [c for c in REQUIRED_COLUMNS if c not in row]
        if missing:
            raise DataPrepError(f"{where}: missing column(s) {missing}")
        if not isinstance(row["data_source"], str) or not row["data_source"]:
            raise DataPrepError(f"{where}: data_source must be a non-empty string, got {row['data_source']!r}")
        prompt = row["prompt"]
        if hasattr(prompt, "tolist"):
            prompt = prompt.tolist()
        if not isinstance(prompt, list) or not prompt:
            kind = type(prompt).__name__
            raise DataPrepError(f"{where}: prompt must be a non-empty list of chat messages, got {kind}")
        for j, message in enumerate(prompt):
            if not isinstance(message, dict) or not {"role", "content"} <= set(message):
                raise DataPrepError(f"{where}: prompt[{j}] must be a dict with 'role' and 'content'")
            if message["role"] not in ("system", "user", "assistant") or not isinstance(message["content"], str):
                raise DataPrepError(f"{where}: prompt[{j}] has role {message['role']!r} / non-string content")
        reward_model = row["reward_model"]
        if not isinstance(reward_model, dict) or reward_model.get("style") != "rule":
            raise DataPrepError(f"{where}: reward_model must be {{'style': 'rule', 'ground_truth': ...}}")
        ground_truth = reward_model.get("ground_truth")
        if not isinstance(ground_truth, str) or not ground_truth.strip():
            raise DataPrepError(f"{where}: reward_model.ground_truth must be a non-empty string, got {ground_truth!r}")
        extra = row["extra_info"]
        if not isinstance(extra, dict) or extra.get("split") not in ("train", "test") or "index" not in extra:
            raise DataPrepError(f"{where}: extra_info must be a dict with split ('train'|'test') and index")


def validate_parquet(path: str | Path) -> int:
    """Validate a written (or third-party) verl parquet file; returns the row count."""
    path = Path(path)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001
        raise DataPrepError(f"{path}: not a readable parquet file ({exc})") from exc
    validate_rows(frame.to_dict("records"), str(path))
    return len(frame)


# ---------------------------------------------------------------------------------------------------------- read
def read_local(path: Path) -> list[dict]:
    """Rows of a local parquet / jsonl / json / csv file (or every such file under a directory, sorted)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_EXTENSIONS and p.is_file())
        if not files:
            raise DataPrepError(f"{path}: no {'/'.join(LOCAL_EXTENSIONS)} files in this directory")
        return [row for f in files for row in read_local(f)]
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_dict("records")
    if path.suffix == ".csv":
        return pd.read_csv(path).to_dict("records")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataPrepError(f"{path}: line {n + 1}: invalid JSON ({exc})") from exc
        return rows
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, list) else data.get("data", data.get("rows", []))
    raise DataPrepError(f"{path}: unsupported file type (use {', '.join(LOCAL_EXTENSIONS)})")


def local_candidates(source: Source, from_dir: Path) -> list[Path]:
    """Where `source` may live under `from_dir`, in the order looked at: <name>.<ext>, <name>/, or a clone of the hub
    repo (<repo name>/[<config>/]), e.g. raw/aime24.jsonl, raw/DAPO-Math-17k/,
    raw/OlympiadBench/OE_TO_maths_en_COMP/."""
    repo_dir = from_dir / source.hub_id.split("/")[-1]
    candidates = [from_dir / f"{source.name}{ext}" for ext in LOCAL_EXTENSIONS]
    candidates.append(from_dir / source.name)
    candidates.append(repo_dir / source.config if source.config else repo_dir)
    return candidates


def local_layout(source: Source, from_dir: str | Path = "DIR") -> str:
    """`local_candidates` in words, for error messages: what --from-dir expects for `source`."""
    *files, folder, clone = local_candidates(source, Path(from_dir))
    exts = "|".join(p.suffix.lstrip(".") for p in files)
    return (f"{from_dir}/{source.name}.{{{exts}}}, a folder {folder}/ of such files, or a clone of the hub repo "
            f"{clone}/; columns {source.question}, {source.answer}")  # fmt: skip


def find_local(source: Source, from_dir: Path) -> Path:
    """Where `source` lives under `from_dir` (the first of `local_candidates` that exists)."""
    candidates = local_candidates(source, from_dir)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise DataPrepError(f"{source.name}: no local copy of {source.hub_id} under {from_dir} (looked for {tried})")


def hub_unavailable(source: Source, why: str) -> DataPrepError:
    """The one-line error for a set the hub cannot give here: which set, why, and the two ways on (docs/offline.md)."""
    return DataPrepError(
        f"{source.name}: {why}: prepare it from local files with --from-dir DIR ({local_layout(source)}), or fill "
        "the cache on a node with network (this command there, same HF_HOME) and rerun with HF_HUB_OFFLINE=1; "
        "see docs/offline.md"
    )


def read_hub(source: Source, cache_dir: str | None = None) -> list[dict]:
    """The source's rows from the hub (or the datasets cache under HF_HUB_OFFLINE=1). A hub that does not answer, or
    a set missing from the cache offline, is a one-line `DataPrepError` (`hub_unavailable`) rather than `datasets`'
    retries (about 25 s) and traceback."""
    from verl_ext.model_path import hub_endpoint, hub_offline, hub_unreachable

    try:
        import datasets  # lazy: only the hub path needs it
    except ImportError as exc:  # pragma: no cover
        raise DataPrepError("reading from the hub needs `pip install datasets` (or use --from-dir)") from exc
    offline = hub_offline()
    if not offline:
        reason = hub_unreachable(source.hub_id, "dataset")
        if reason:
            raise hub_unavailable(source, f"the Hugging Face hub ({hub_endpoint()}) is unreachable ({reason}), so "
                                          f"{source.hub_id} cannot be downloaded")  # fmt: skip
    try:
        ds = datasets.load_dataset(source.hub_id, source.config, split=source.split, cache_dir=cache_dir)
    except ConnectionError as exc:  # datasets' "Couldn't reach ..." (also huggingface_hub's OfflineModeIsEnabled)
        if offline:
            cache = cache_dir or datasets.config.HF_DATASETS_CACHE
            why = f"HF_HUB_OFFLINE=1 and {source.hub_id} is not in the cache ({cache})"
            raise hub_unavailable(source, why) from None
        raise hub_unavailable(source, f"could not reach {source.hub_id} on {hub_endpoint()} ({exc})") from None
    except datasets.exceptions.DatasetNotFoundError as exc:
        first = " ".join(str(exc).split())[:200]
        raise DataPrepError(f"{source.name}: {source.hub_id} not found on {hub_endpoint()} ({first})") from None
    return ds.to_pandas().to_dict("records")  # DAPO-Math-17k has ~1.8M rows (each prompt repeated): stay columnar


# ---------------------------------------------------------------------------------------------------------- main
def output_path(out_dir: str | Path, name: str) -> Path:
    """<out_dir>/dapo_math_17k.parquet (train) or <out_dir>/eval/<name>.parquet (evaluation)."""
    sub_dir = "" if SOURCES[name].role == "train" else "eval"
    return Path(out_dir) / sub_dir / f"{name}.parquet"


def prepare(
    names: Sequence[str],
    out_dir: str | Path,
    from_dir: str | Path | None = None,
    cache_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Convert, validate and write each named source; returns name -> path. The training set goes to
    <out_dir>/<name>.parquet, the evaluation sets to <out_dir>/eval/<name>.parquet (configs/eval.yaml's data_dir)."""
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise DataPrepError(f"unknown dataset(s) {unknown}; known: {', '.join(SOURCES)}")
    out_dir = Path(out_dir)
    written = {}
    for name in names:
        source = SOURCES[name]
        if from_dir is not None:
            origin = find_local(source, Path(from_dir))
            records = read_local(origin)
        else:
            origin = f"hf://{source.hub_id}" + (f"[{source.config}]" if source.config else "") + f":{source.split}"
            records = read_hub(source, cache_dir)
        frame = convert(source, records, origin=str(origin))
        validate_rows(frame.to_dict("records"), f"{origin} -> {name}")
        path = output_path(out_dir, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
        validate_parquet(path)
        dedup = f" ({len(records) - len(frame)} duplicates dropped)" if source.role == "train" else ""
        log(f"{name:>14}: {len(frame):6d} rows{dedup} <- {origin} -> {path}")
        written[name] = path
    return written
