"""The compute floor of a toy training step: the toy reasoner's own forward and backward over one step's tokens, in
one process, with verl's packing (each micro-batch's sequences concatenated, position ids restarting per sequence, so
transformers' sdpa masks them apart) and none of verl, Ray or vLLM around it.

A step of the toy regime (32 prompts x 8 answers, ~61 tokens a sequence: verl's `global_seqlen/mean` ~15.6k tokens)
runs two forward-only passes (old and reference log-probs) and one forward + backward (the update), each over every
sequence in micro-batches. This times the same passes at several micro-batch sizes: what `bench_step_profile`'s
`timing_s/old_log_prob`, `timing_s/ref` and `timing_s/update_actor` cost beyond the model itself.

    python -m bench.bench_model_floor [--micro 2 4 8 16] [--repeats 3] [--write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from bench.results import write_section

SEQUENCES, TOKENS_PER_SEQUENCE = 256, 61  # the toy regime's step: 32 x 8 answers, measured mean length


def packed_batches(micro: int, vocab: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids, position_ids), each (1, micro * TOKENS_PER_SEQUENCE): `micro` sequences packed as verl packs them."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(SEQUENCES // micro):
        ids = torch.randint(0, vocab, (1, micro * TOKENS_PER_SEQUENCE), generator=generator)
        positions = torch.arange(TOKENS_PER_SEQUENCE).repeat(micro).unsqueeze(0)
        batches.append((ids, positions))
    return batches


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(model, micro: int, repeats: int) -> dict[str, list[float]]:
    batches = packed_batches(micro, model.config.vocab_size)

    def forward_only():
        with torch.no_grad():
            for ids, positions in batches:
                model(input_ids=ids, position_ids=positions).logits.log_softmax(-1)

    def forward_backward():
        for ids, positions in batches:
            model(input_ids=ids, position_ids=positions).logits.log_softmax(-1).mean().backward()
        model.zero_grad(set_to_none=True)

    forward_only()  # warm-up: first-call allocations
    return {"forward (one log-prob pass)": [timed(forward_only) for _ in range(repeats)],
            "forward + backward (the update's passes)": [timed(forward_backward) for _ in range(repeats)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--micro", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="rewrite the model_floor block of bench/RESULTS.md")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    from verl_ext.toy_model import toy_model_dir

    model_dir = toy_model_dir(Path(".cache/models").resolve())
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    load = os.getloadavg()[0]
    results = {micro: measure(model, micro, args.repeats) for micro in args.micro}
    params = sum(p.numel() for p in model.parameters())
    tokens = SEQUENCES * TOKENS_PER_SEQUENCE
    lines = [f"Toy reasoner ({params / 1e6:.2f} M parameters), {SEQUENCES} sequences x {TOKENS_PER_SEQUENCE} tokens "
             f"({tokens} tokens, ~{2 * params * tokens / 1e9:.0f} GFLOP a forward in its matmuls), fp32, sdpa, "
             f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores, 1-min load average {load:.1f} at the "
             f"start; seconds for all {SEQUENCES} sequences, median (min-max) of {args.repeats}.", "",
             "| micro-batch (sequences packed) | " + " | ".join(results[args.micro[0]]) + " |",
             "|---:|" + "---:|" * len(results[args.micro[0]])]
    for micro, timings in results.items():
        lines.append(f"| {micro} | " + " | ".join(
            f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" for v in timings.values()) + " |")
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section("model_floor", body)


if __name__ == "__main__":
    main()
