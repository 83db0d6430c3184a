"""The GPU install (docs/gpu.md, "Training on a cluster"), checked on a CPU machine without installing it:

- the `gpu` extra is verl 0.9.1's `vllm` and `fsdp` extras minus flash-attn, read from verl's installed metadata (so
  a verl bump that changes them fails here, not on a cluster);
- pip's own resolver resolves the documented command (`pip install -e '.[gpu]'`: metadata only, `--dry-run`) to the
  versions verl 0.9.1 pins for torch, vLLM, transformers, Ray and tensordict, without flash-attn, whose 2.8.3 pin PyPI
  serves only as a source build (its metadata step imports torch, its build needs nvcc: hours);
- the documented optional flash-attn wheel is verl's flash-attn version, built for the torch version and CUDA major the
  resolver picked.

The resolution reads PyPI (about 2.5 min on a 2-core machine) and is skipped, saying so, when the index is out of reach.
It runs with pip's configuration files and PIP_* variables switched off: a machine's own pip set-up (this development
machine's has a local CPU-torch wheel folder, two local indexes and a `torch<=2.14.1` constraints file) would
otherwise change what a fresh cluster node resolves.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
CHECKED = ("torch", "vllm", "transformers", "ray", "tensordict")  # the pins a wrong install gets wrong
SOURCE_ONLY = "flash-attn"  # verl's fsdp extra pins it; PyPI has no wheel of it
RESOLVE_TIMEOUT_S = 900
# pip settings that are about reaching the index, not about what it resolves: kept from the environment
PIP_NETWORK_VARS = {"PIP_INDEX_URL", "PIP_CERT", "PIP_CLIENT_CERT", "PIP_TRUSTED_HOST", "PIP_PROXY",
                    "PIP_DEFAULT_TIMEOUT", "PIP_RETRIES"}


# ------------------------------------------------------------------------------------------------ the documents
def cluster_install_commands() -> list[list[str]]:
    """The `pip install` lines of docs/gpu.md's "Training on a cluster" code block, shell-split."""
    text = (REPO / "docs" / "gpu.md").read_text()
    start = text.index("Training on a cluster")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block, "docs/gpu.md: no ```bash block after 'Training on a cluster'"
    lines = [line.split(" #", 1)[0].strip() for line in block.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("pip install")]


def gpu_extra() -> list[Requirement]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["gpu"]]


def verl_requirements(extras: set[str], base: bool = True) -> set[Requirement]:
    """verl's requirements for ``extras`` (its own ``verl[x]`` references expanded), from its installed metadata."""
    requires = [Requirement(r) for r in md.requires("verl") or []]
    out: dict[str, Requirement] = {}
    todo, seen = list(extras) + ([""] if base else []), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in requires:
            if not _belongs(req.marker, extra):
                continue
            if canonicalize_name(req.name) == "verl":
                todo.extend(req.extras)
            else:
                plain = Requirement(str(req).split(";")[0])
                out[str(plain)] = plain
    return set(out.values())


def _belongs(marker: Marker | None, extra: str) -> bool:
    """``extra=""``: a base requirement; else one that only this extra brings."""
    if not extra:
        return marker is None or marker.evaluate({"extra": ""})
    return marker is not None and "extra" in str(marker) and marker.evaluate({"extra": extra})


def _key(req: Requirement) -> tuple[str, str, tuple[str, ...]]:
    return canonicalize_name(req.name), str(req.specifier), tuple(sorted(req.extras))


def _gpu_extras_of_verl() -> tuple[Requirement, set[str]]:
    (verl,) = [r for r in gpu_extra() if canonicalize_name(r.name) == "verl"]
    return verl, set(verl.extras)


# ------------------------------------------------------------------------------------------------ fast checks
def test_gpu_extra_is_verls_vllm_and_fsdp_extras_without_flash_attn():
    verl, extras = _gpu_extras_of_verl()
    assert verl.specifier == SpecifierSet(f"=={md.version('verl')}"), f"the gpu extra pins {verl}; installed verl is " \
                                                                       f"{md.version('verl')}"
    ours = verl_requirements(extras, base=False) | {r for r in gpu_extra() if canonicalize_name(r.name) != "verl"}
    theirs = verl_requirements({"vllm", "fsdp"}, base=False)
    assert any(canonicalize_name(r.name) == SOURCE_ONLY for r in theirs), "verl's fsdp extra no longer pins flash-attn"
    want = {_key(r) for r in theirs if canonicalize_name(r.name) != SOURCE_ONLY}
    got = {_key(r) for r in ours}
    assert got == want, f"missing from the gpu extra: {sorted(want - got)}; not in verl's extras: {sorted(got - want)}"


def test_readme_installs_the_gpu_extra_then_a_matching_flash_attn_wheel():
    commands = cluster_install_commands()
    assert commands[0] == ["pip", "install", "-e", ".[gpu]"], commands
    wheels = [arg for cmd in commands[1:] for arg in cmd if arg.endswith(".whl")]
    assert len(wheels) == 1, f"one optional flash-attn wheel, got {wheels}"
    name, version, _build, tags = parse_wheel_filename(wheels[0].rsplit("/", 1)[-1])
    (pin,) = [r for r in verl_requirements({"fsdp"}) if canonicalize_name(r.name) == SOURCE_ONLY]
    assert name == SOURCE_ONLY and Version(version.public) in pin.specifier, (wheels[0], pin)
    label = re.fullmatch(r"cu(\d+)torch(\d+\.\d+)", version.local or "")
    assert label, f"{wheels[0]}: its local version should say its CUDA and torch ({version})"
    (torch_pin,) = {Version(s.version) for r in verl_requirements({"vllm", "fsdp"}) if r.name == "torch"
                    for s in r.specifier if s.operator == "=="}
    assert label.group(2) == f"{torch_pin.major}.{torch_pin.minor}", \
        f"{wheels[0]} is built for torch {label.group(2)}; verl pins torch=={torch_pin}"
    pythons = {tag.interpreter for tag in tags}
    requires_python = SpecifierSet(md.metadata("verl")["Requires-Python"])
    assert all(Version(f"{p[2]}.{p[3:]}") in requires_python for p in pythons), (pythons, requires_python)


# ------------------------------------------------------------------------------------------------ pip's resolver
def _isolated_pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in PIP_NETWORK_VARS}
    env["PIP_CONFIG_FILE"] = os.devnull  # pip then reads no configuration file at all (global, user, site)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _index_reachable(index: str) -> str | None:
    try:
        urllib.request.urlopen(f"{index.rstrip('/')}/verl/", timeout=15).close()
    except (urllib.error.URLError, OSError) as err:
        return f"{index} cannot be reached ({err}); the documented GPU install was not resolved"
    return None


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    """pip's resolution of the documented `pip install -e '.[gpu]'` for this Python and platform: {name: version}."""
    command = cluster_install_commands()[0]
    env = _isolated_pip_env()
    reason = _index_reachable(env.get("PIP_INDEX_URL", "https://pypi.org/simple"))
    if reason:
        pytest.skip(reason)
    report = tmp_path_factory.mktemp("gpu_install") / "report.json"
    # --dry-run: resolve and report, install nothing; --ignore-installed: as on a fresh node, not on top of this venv
    args = [sys.executable, "-m", "pip", *command[1:], "--dry-run", "--ignore-installed", "--quiet",
            "--report", str(report)]
    try:
        run = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pip did not resolve the GPU install within {RESOLVE_TIMEOUT_S} s: {shlex.join(command)}")
    assert run.returncode == 0, f"{shlex.join(command)} does not resolve:\n{run.stderr[-5000:]}"
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"] for item in json.loads(report.read_text())["install"]}


@pytest.mark.slow
def test_documented_gpu_install_resolves_to_verls_pins(resolved):
    assert SOURCE_ONLY not in resolved, "the gpu extra still pulls flash-attn's source-only pin"
    pins = verl_requirements({"vllm", "fsdp"})
    for name in CHECKED:
        assert name in resolved, f"{name} is not in the resolved GPU install"
        version = Version(resolved[name]["version"])
        specs = [r.specifier for r in pins if canonicalize_name(r.name) == name]
        assert specs, f"verl 0.9.1 has no requirement on {name}"
        for spec in specs:
            assert version in spec, f"resolved {name} {version}, verl 0.9.1 requires {name}{spec}"
    for name in ("torch", "vllm", "transformers"):  # exact pins in verl's extras, not only ranges
        assert any(s.operator == "==" for r in pins if r.name == name for s in r.specifier), name


@pytest.mark.slow
def test_readme_flash_attn_wheel_matches_the_resolved_torch(resolved):
    """The optional wheel's `+cu<CUDA>torch<X.Y>` label against the torch pip picked and the CUDA its libraries are."""
    wheel = next(arg for cmd in cluster_install_commands()[1:] for arg in cmd if arg.endswith(".whl"))
    version = parse_wheel_filename(wheel.rsplit("/", 1)[-1])[1]
    cuda, torch_minor = re.fullmatch(r"cu(\d+)torch(\d+\.\d+)", version.local).groups()
    torch = Version(resolved["torch"]["version"])
    assert f"{torch.major}.{torch.minor}" == torch_minor, (wheel, torch)
    cuda_libs = {m.group(1) for d in resolved["torch"].get("requires_dist", [])
                 if (m := re.match(r"nvidia-[a-z0-9-]+?-cu(\d+)\W", d))}
    assert cuda_libs == {cuda[:2]}, f"torch {torch} brings CUDA {cuda_libs} libraries; {wheel} is built for cu{cuda}"
