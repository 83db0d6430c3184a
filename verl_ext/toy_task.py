"""The toy reasoner's task: running sums written out step by step, the number of steps setting the difficulty.

A problem of level k adds k numbers: a first number in 10..29, then k - 1 digits 1..9. The solution writes one line per
partial sum and ends in a boxed answer, the format the project's reward (`recipe/sent/reward.py`, math-verify on the
last ``\\boxed{}``) and the scoring job's extraction (`verl_ext/semantic_entropy/answers.py`) already read:

    prompt   "12+5+9+3"
    response "12+5=17\\n17+9=26\\n26+3=29\\n\\boxed{29}"

Every step is one addition, so a model that gets a step right with probability p solves level k with about p^(k-1):
difficulty compounds with the level, and the wrong answers scatter more the more steps can go wrong. `slipped_solution`
writes the worked solution of a careless solver (each partial sum off by one with a given probability, the later lines
carrying the slip on): the toy reasoner learns from such solutions, so its uncertainty sits at the partial sums, where
RL can find and remove it. Sums stay below
100, so a response is at most 8 characters a line and 60 characters at the held-out level 8 (64 tokens suffice with
the toy model's character tokenizer). Pure Python, seeded, no I/O.
"""

from __future__ import annotations

import random

TRAIN_LEVELS = (2, 3, 4, 5, 6, 7)  # k, the count of numbers added
HELDOUT_LEVEL = 8  # one level harder than any trained one: does exploration generalise?
LEVELS = (*TRAIN_LEVELS, HELDOUT_LEVEL)
FIRST = (10, 29)  # the first number's range; the rest are digits 1..9
DATA_SOURCE = "sent_toy"


def sample_numbers(rng: random.Random, level: int) -> tuple[int, ...]:
    """The k = `level` numbers of one problem."""
    if level < 2:
        raise ValueError(f"level must be >= 2 (numbers to add); got {level}")
    return (rng.randint(*FIRST), *(rng.randint(1, 9) for _ in range(level - 1)))


def question(numbers: tuple[int, ...]) -> str:
    return "+".join(str(n) for n in numbers)


def solution(numbers: tuple[int, ...]) -> str:
    """The worked solution: one line per partial sum, then the boxed total."""
    lines, total = [], numbers[0]
    for n in numbers[1:]:
        lines.append(f"{total}+{n}={total + n}")
        total += n
    return "\n".join(lines) + f"\n\\boxed{{{total}}}"


def slipped_solution(numbers: tuple[int, ...], rng: random.Random, slip_rate: float) -> str:
    """`solution` as a careless solver writes it: each partial sum is off by one (up or down, evenly) with probability
    `slip_rate`, and the next line adds to the sum as written, so the boxed total carries every slip."""
    lines, total = [], numbers[0]
    for n in numbers[1:]:
        written = total + n + (rng.choice((-1, 1)) if rng.random() < slip_rate else 0)
        lines.append(f"{total}+{n}={written}")
        total = written
    return "\n".join(lines) + f"\n\\boxed{{{total}}}"


def answer(numbers: tuple[int, ...]) -> str:
    return str(sum(numbers))


def problems(per_level: dict[int, int], seed: int, exclude: set[tuple[int, ...]] = frozenset()
             ) -> list[tuple[tuple[int, ...], int]]:
    """(numbers, level), `per_level[level]` distinct problems at each level, none of them in `exclude`."""
    rng = random.Random(seed)
    out: list[tuple[tuple[int, ...], int]] = []
    for level, count in sorted(per_level.items()):
        space = (FIRST[1] - FIRST[0] + 1) * 9 ** (level - 1)
        if count > space - sum(len(e) == level for e in exclude):
            raise ValueError(f"level {level}: {count} distinct problems asked, only {space} exist (minus excluded)")
        seen: set[tuple[int, ...]] = set()
        while len(seen) < count:
            numbers = sample_numbers(rng, level)
            if numbers not in seen and numbers not in exclude:
                seen.add(numbers)
                out.append((numbers, level))
    return out


def rows(per_level: dict[int, int], seed: int, split: str = "train",
         exclude: set[tuple[int, ...]] = frozenset()) -> list[dict]:
    """verl-format rows (as `recipe/drivers/demo_data.demo_rows` writes them); `extra_info.level` is k."""
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": question(numbers)}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer(numbers)},
            "extra_info": {"split": split, "index": index, "level": level},
        }
        for index, (numbers, level) in enumerate(problems(per_level, seed, exclude))
    ]


def split_rows(train_per_level: dict[int, int], heldout_per_level: dict[int, int], seed: int
               ) -> tuple[list[dict], list[dict]]:
    """A train split and a held-out split with no problem in common (the held-out one may include HELDOUT_LEVEL)."""
    held = problems(heldout_per_level, seed + 1)
    return (rows(train_per_level, seed, "train", exclude={numbers for numbers, _ in held}),
            rows(heldout_per_level, seed + 1, "test"))


def numbers_of(prompt: str) -> tuple[int, ...]:
    """The numbers of a question string (the inverse of `question`)."""
    return tuple(int(part) for part in prompt.split("+"))
