"""docker/Dockerfile, checked without Docker (no daemon runs in CI or on the development machine): it starts from the
verl image for the vLLM that verl 0.9.1 pins, installs this project's `gpu` extra with its dependencies (so the image is
brought up to the same pins as pyproject.toml, never hidden behind `--no-deps`), pins nothing differently, runs
`pip check` after the last install, and ends by importing every module a run loads, all of which exist in this tree."""

from __future__ import annotations

import importlib.metadata as md
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
ENGINES = {"torch", "vllm", "verl", "transformers", "ray"}  # third-party imports a run cannot start without


# ------------------------------------------------------------------------------------------------ reading it
def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def build_args() -> dict[str, str]:
    args = {}
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = shlex.split(value)[0] if value else ""
    return args


def shell_commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN line (split at `&&`, `;`, `||`, `|` outside quotes)."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in ("&&", ";", "||", "|"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in [*commands, current] if c]


def pip_commands() -> list[tuple[int, list[str]]]:
    """(instruction index, pip's argv after `pip`) of every pip command in a RUN, in order."""
    found = []
    for index, (word, rest) in enumerate(instructions()):
        for argv in shell_commands(rest) if word == "RUN" else []:
            if argv[0] in ("pip", "pip3"):
                found.append((index, argv[1:]))
            elif argv[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
                found.append((index, argv[3:]))
    return found


def project_pins() -> dict[str, list[Requirement]]:
    """Requirements of this project and its `gpu` extra, and verl's for the extras the `gpu` extra names."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["gpu"]]]
    extras = {e for r in reqs if canonicalize_name(r.name) == "verl" for e in r.extras} | {""}
    verl = [Requirement(r) for r in md.requires("verl") or []]
    reqs += [r for r in verl if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras)]
    by_name: dict[str, list[Requirement]] = {}
    for r in reqs:
        by_name.setdefault(canonicalize_name(r.name), []).append(r)
    return by_name


# ------------------------------------------------------------------------------------------------ the checks
def test_base_image_is_verls_image_for_its_pinned_vllm():
    (vllm,) = [s.version for r in project_pins()["vllm"] for s in r.specifier if s.operator == "=="]
    v = Version(vllm)
    tag = f"verlai/verl:vllm{v.major}{v.minor:02d}.latest"  # verl's naming: vllm024.latest for vllm 0.24.x
    assert build_args()["BASE_IMAGE"] == tag, f"verl 0.9.1 pins vllm=={vllm}; verl documents its image as {tag}"
    assert instructions()[[w for w, _ in instructions()].index("FROM")][1] == "${BASE_IMAGE}", "keep --build-arg BASE_IMAGE"


def test_installs_the_gpu_extra_with_its_dependencies():
    commands = [argv for _, argv in pip_commands() if argv[:1] == ["install"]]
    assert any(".[gpu]" in argv for argv in commands), f"the project's gpu extra is not installed: {commands}"
    assert not any("--no-deps" in argv for argv in commands), "--no-deps hides what the image is behind on"


def test_pins_nothing_differently_from_pyproject_and_verl():
    pins = project_pins()
    for argv in (argv for _, argv in pip_commands() if argv[:1] == ["install"]):
        for arg in argv[1:]:
            try:
                req = Requirement(arg)
            except InvalidRequirement:
                continue  # options, paths
            for spec in (s for s in req.specifier if s.operator == "=="):
                for theirs in pins.get(canonicalize_name(req.name), []):
                    assert Version(spec.version) in theirs.specifier, f"Dockerfile: {req}; pyproject/verl: {theirs}"
    for name, value in build_args().items():  # e.g. an ARG TRANSFORMERS_VERSION=5.3.0 would be a pin of its own
        match = re.fullmatch(r"(\w+)_VERSION", name)
        if match and canonicalize_name(match.group(1)) in pins:
            for theirs in pins[canonicalize_name(match.group(1))]:
                assert Version(value) in theirs.specifier, f"Dockerfile: {name}={value}; pyproject/verl: {theirs}"


def test_pip_check_runs_after_the_last_install():
    commands = pip_commands()
    installs = [i for i, argv in commands if argv[:1] == ["install"]]
    checks = [i for i, argv in commands if argv[:1] == ["check"]]
    assert checks and max(checks) >= max(installs), commands
    flat = [argv[0] for _, argv in commands]
    assert flat[-1] == "check", f"pip check must follow the last pip install: {flat}"


def _referenced_modules() -> set[str]:
    """Our modules a training run loads: main_sent, the entry points, and what the training config names."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    modules = {"recipe.sent.main_sent", "recipe.sent.trainer"}  # the TaskRunner imports the trainer
    modules |= {target.split(":")[0] for group in project["entry-points"].values() for target in group.values()}
    text = (REPO / "configs" / "sent_trainer.yaml").read_text()
    modules |= set(re.findall(r"pkg://((?:recipe|verl_ext)[\w.]*)", text))
    modules |= {t.rsplit(".", 1)[0] for t in re.findall(r"_target_:\s*((?:recipe|verl_ext)[\w.]+)", text)}
    yaml.safe_load(text)  # the file parses (a broken YAML would make the regexes above meaningless)
    return modules


def _exists_here(module: str) -> bool:
    base = REPO.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def test_final_step_imports_every_module_a_run_loads():
    imports = build_args()["IMPORTS"].split()
    ours = {m for m in imports if m.split(".")[0] in {"recipe", "verl_ext"}}
    missing_here = [m for m in ours if not _exists_here(m)]
    assert not missing_here, f"IMPORTS names modules that do not exist in this tree: {missing_here}"
    assert _referenced_modules() <= ours, f"not imported at build time: {_referenced_modules() - ours}"
    assert ENGINES <= set(imports), f"engines not imported: {ENGINES - set(imports)}"
    runs = [rest for word, rest in instructions() if word == "RUN"]
    (check,) = [i for i, rest in enumerate(runs) if "${IMPORTS}" in rest]
    assert "find_spec('flash_attn')" in runs[check], "flash_attn must be imported when the image has it"
    last_pip = max(i for i, rest in enumerate(runs) if re.search(r"\bpip (install|check)\b", rest))
    assert check > last_pip, "the imports must run on the finished environment"


@pytest.mark.parametrize("source", ["pyproject.toml", "README.md", "verl_ext", "recipe", "configs"])
def test_copies_what_the_install_and_a_run_need(source):
    copied = {src for word, rest in instructions() if word == "COPY" for src in shlex.split(rest)[:-1]}
    assert source in copied and (REPO / source).exists(), copied
