"""A node without the Hugging Face hub (docs/offline.md): every place a run first reaches the hub (data preparation,
the scoring job, the evaluation harness, training's model path) ends, when the hub is unreachable or HF_HUB_OFFLINE=1
has an empty cache, in one line naming the set or model and the way on, without a traceback and within seconds.

Each entry point runs as a real subprocess. "Unreachable": HF_ENDPOINT is a closed local port (or a port that accepts
and never answers), HF_HUB_OFFLINE unset, small hub timeouts; "offline": HF_HUB_OFFLINE=1 with HF_HOME an empty folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from verl_ext.data_prep import DAPO_PREFIX, SOURCES, local_layout

REPO = Path(__file__).resolve().parents[1]
MODEL = "Qwen/Qwen2.5-Math-7B"
DEADLINE_S = 90  # the subprocess timeout; each run takes seconds (main_sent: imports verl, composes the config)
HUB_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
            "HF_DATASETS_CACHE", "HF_DATASETS_OFFLINE")  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: connections are refused


def hub_env(tmp_path: Path, mode: str, endpoint: str | None = None) -> dict[str, str]:
    """The environment of a node without the hub: `unreachable` (HF_ENDPOINT answers nothing, HF_HUB_OFFLINE unset)
    or `offline` (HF_HUB_OFFLINE=1); in both, an empty HF_HOME and hub timeouts of 3 s."""
    env = {k: v for k, v in os.environ.items() if k not in HUB_VARS}
    home = tmp_path / "hf_home"
    home.mkdir(exist_ok=True)
    env.update(PYTHONPATH=str(REPO), HF_HOME=str(home), HF_HUB_ETAG_TIMEOUT="3", HF_HUB_DOWNLOAD_TIMEOUT="3")
    if mode == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = endpoint or f"http://127.0.0.1:{_closed_port()}"
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.time()
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=DEADLINE_S)  # fmt: skip
    return done, time.time() - started


def last_line(done: subprocess.CompletedProcess) -> str:
    """The complaint: nonzero exit, no traceback anywhere, and the last stderr line."""
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-5000:]
    return [line for line in done.stderr.splitlines() if line.strip()][-1]


PREPARE = ["scripts/prepare_data.py", "--out-dir", "data"]
SCORE = ["-m", "verl_ext.semantic_entropy", "input_files=in.parquet", "output_dir=scored", f"model.path={MODEL}"]
EVAL = ["-m", "verl_ext.eval", "output_dir=evaluated", f"model.path={MODEL}"]
TRAIN = ["-m", "recipe.sent.main_sent", "machine=cpu", f"actor_rollout_ref.model.path={MODEL}",
         "trainer.default_local_dir=ckpt"]  # fmt: skip


@pytest.mark.parametrize("mode", ["unreachable", "offline"])
def test_prepare_data_names_the_set_and_the_way_on(mode, tmp_path):
    done, took = run([str(REPO / PREPARE[0]), *PREPARE[1:]], hub_env(tmp_path, mode), tmp_path)
    line = last_line(done)
    assert done.returncode == 1 and took < 30, (took, line)
    assert line.startswith("error: dapo_math_17k: "), line
    assert "BytedTsinghua-SIA/DAPO-Math-17k" in line
    assert ("is unreachable" if mode == "unreachable" else "HF_HUB_OFFLINE=1 and BytedTsinghua-SIA/DAPO-Math-17k "
            "is not in the cache") in line  # fmt: skip
    assert f"--from-dir DIR ({local_layout(SOURCES['dapo_math_17k'])})" in line
    assert "DIR/dapo_math_17k.{parquet|jsonl|json|csv}" in line and "DIR/DAPO-Math-17k/" in line
    assert "rerun with HF_HUB_OFFLINE=1" in line and "docs/offline.md" in line
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("mode", ["unreachable", "offline"])
@pytest.mark.parametrize(("entry", "key", "code"), [
    (SCORE, "model.path", 2),
    (EVAL, "model.path", 2),
    (TRAIN, "actor_rollout_ref.model.path", 1),  # before Ray starts (it would fail in the workers, one by one)
], ids=["score", "eval", "train"])  # fmt: skip
def test_a_hub_model_this_node_cannot_get_is_one_line(entry, key, code, mode, tmp_path):
    done, took = run(entry, hub_env(tmp_path, mode), tmp_path)
    line = last_line(done)
    assert done.returncode == code and took < 60, (took, line)
    assert line.removeprefix("error: ").startswith(f"{key}={MODEL}: not a local folder, and "), line
    if mode == "offline":
        assert f"HF_HUB_OFFLINE=1 but the model is not in the Hugging Face cache ({tmp_path}/hf_home/hub)" in line
    else:
        assert "the Hugging Face hub (http://127.0.0.1:" in line and "is unreachable (ConnectError" in line
    assert line.endswith(f"pass a local model folder, or fill the cache on a node with network (`hf download {MODEL}`, "
                         "same HF_HOME) and set HF_HUB_OFFLINE=1; see docs/offline.md"), line  # fmt: skip
    assert "Started a local Ray instance" not in done.stdout + done.stderr
    written = {p.name for p in tmp_path.iterdir()} - {"hf_home", "outputs"}  # outputs/: Hydra's log of main_sent
    assert not written, f"nothing may run (or write) before the check: {written}"


def _silent_hub():
    """A port that accepts connections and never answers (a firewall that drops, a hung proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server


def test_a_hub_that_never_answers_is_given_up_after_the_hub_timeout(tmp_path):
    with _silent_hub() as server:
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        env = hub_env(tmp_path, "unreachable", endpoint)
        done, took = run([str(REPO / PREPARE[0]), *PREPARE[1:], "--only", "aime24"], env, tmp_path)
        line = last_line(done)
        assert line.startswith(f"error: aime24: the Hugging Face hub ({endpoint}) is unreachable (ReadTimeout"), line
        assert took < 30, took  # HF_HUB_ETAG_TIMEOUT=3, once: not datasets' five retries (about 40 s here)
        score, took = run(SCORE, env, tmp_path)
        assert f"hub ({endpoint}) is unreachable (ReadTimeout" in last_line(score) and took < 30


def test_a_hub_that_answers_passes_the_check(tmp_path):
    """Any HTTP answer (here 404 from a local server) means the hub is there: the loader reports a missing or gated
    repo itself; the check only stops what cannot work on this node."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = hub_env(tmp_path, "unreachable", f"http://127.0.0.1:{server.server_address[1]}")
        done, _ = run(["-c", f"from verl_ext.model_path import check_model_available as c; c('m', {MODEL!r})"], env,
                      tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        server.shutdown()
        server.server_close()


def _fake_cached_model(home: Path, repo_id: str) -> None:
    """What `hf download` leaves in HF_HOME/hub for the files the check looks at."""
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "tokenizer_config.json"):
        (snapshot / name).write_text("{}")


def test_a_cached_hub_model(tmp_path):
    """Cached + HF_HUB_OFFLINE=1: accepted. Cached + hub unreachable (HF_HUB_OFFLINE unset): one line saying to set
    HF_HUB_OFFLINE=1 (else every file would wait for the hub's retries before the cache is used)."""
    check = ["-c", "import sys; from verl_ext.config import ConfigError; from verl_ext.model_path import "
             f"check_model_available as c\ntry: c('model.path', {MODEL!r})\nexcept ConfigError as e: sys.exit(str(e))\n"
             "print('ok')"]  # fmt: skip
    env = hub_env(tmp_path, "offline")
    _fake_cached_model(Path(env["HF_HOME"]), MODEL)
    done, _ = run(check, env, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
    env = hub_env(tmp_path, "unreachable")
    done, _ = run(check, env, tmp_path)
    assert last_line(done).startswith(f"model.path={MODEL}: the Hugging Face hub ({env['HF_ENDPOINT']}) is unreachable")
    done, _ = run(EVAL, env, tmp_path)
    line = last_line(done)
    assert line.startswith(f"error: model.path={MODEL}: the Hugging Face hub ({env['HF_ENDPOINT']}) is unreachable")
    assert line.endswith(f"the model is in the cache ({tmp_path}/hf_home/hub): set HF_HUB_OFFLINE=1 to load it from "
                         "there"), line  # fmt: skip


def _layout_rows(name: str) -> list[dict]:
    """Two rows of `name` with the columns local_layout names (question, answer), valued as on the hub."""
    source = SOURCES[name]
    if name == "dapo_math_17k":
        prompts = [[{"role": "user", "content": DAPO_PREFIX + f"What is {i}+1?"}] for i in range(2)]
        return [{"prompt": p, "reward_model": {"style": "rule-lighteval/MATH_v2", "ground_truth": str(i + 1)}}
                for i, p in enumerate(prompts)]
    return [{source.question: f"{name}: what is {i}+1?", source.answer: [f"${i + 1}$"] if name == "olympiadbench"
             else str(i + 1)} for i in range(2)]  # fmt: skip


def test_from_dir_prepares_every_set_from_the_files_the_error_names(tmp_path):
    """The local layout the one-line error names (local_layout: <name>.<ext>, a folder, a clone of the hub repo) is
    what --from-dir reads, with the hub unreachable all along; a set prepared earlier is kept by a failed hub run."""
    raw = tmp_path / "raw"
    forms = {"dapo_math_17k": "clone", "aime24": "parquet", "aime25": "jsonl", "amc23": "folder", "math500": "clone",
             "minerva": "jsonl", "olympiadbench": "clone"}  # fmt: skip
    for name, form in forms.items():
        source, frame = SOURCES[name], pd.DataFrame(_layout_rows(name))
        layout = local_layout(source, raw)
        if form in ("parquet", "jsonl"):  # <name>.<ext>
            path = raw / f"{name}.{form}"
            assert f"{raw}/{name}.{{parquet|jsonl|json|csv}}" in layout
        elif form == "folder":  # <name>/ of such files
            path = raw / name / "part-0.parquet"
            assert f"a folder {raw / name}/ of such files" in layout
        else:  # a clone of the hub repo: <repo name>/[<config>/], data files anywhere below
            clone = raw / source.hub_id.split("/")[-1] / (source.config or "")
            path = clone / ("" if source.config else "data") / "train-00000-of-00001.parquet"
            assert f"a clone of the hub repo {str(clone).rstrip('/')}/" in layout
        assert f"columns {source.question}, {source.answer}" in layout
        path.parent.mkdir(parents=True, exist_ok=True)
        if form == "jsonl":
            frame.to_json(path, orient="records", lines=True)
        else:
            frame.to_parquet(path)
    env = hub_env(tmp_path, "unreachable")
    out = tmp_path / "data"
    done, _ = run([str(REPO / PREPARE[0]), "--from-dir", str(raw), "--out-dir", str(out)], env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in SOURCES:
        path = out / f"{name}.parquet" if name == "dapo_math_17k" else out / "eval" / f"{name}.parquet"
        frame = pd.read_parquet(path)
        assert len(frame) == 2, (name, forms[name])
        assert frame.iloc[1]["reward_model"]["ground_truth"] == "2"
    kept = (out / "eval" / "aime24.parquet").read_bytes()
    done, _ = run([str(REPO / PREPARE[0]), "--out-dir", str(out), "--only", "math500", "aime24"], env, tmp_path)
    assert last_line(done).startswith("error: math500: the Hugging Face hub")
    assert (out / "eval" / "aime24.parquet").read_bytes() == kept
    assert not list(out.rglob("*.tmp"))
