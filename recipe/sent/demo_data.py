"""The demo's bundled math set, written for this project: short problems from one-step arithmetic to multi-step
word problems, so that a small model's answers agree on some (low semantic entropy) and scatter on others."""

from __future__ import annotations

# Short answers: the demo model is tiny; the paper's "reason step by step" prompt is in scripts/prepare_data.py.
INSTRUCTION = "Reply with the final answer only, in \\boxed{}."

# (question, answer)
PROBLEMS = [
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


def demo_rows(split: str = "train") -> list[dict]:
    """verl-format rows (as scripts/prepare_data.py writes them) for the bundled set."""
    return [
        {
            "data_source": "sent_demo",
            "prompt": [{"role": "user", "content": f"{question}\n{INSTRUCTION}"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"split": split, "index": index},
        }
        for index, (question, answer) in enumerate(PROBLEMS)
    ]
