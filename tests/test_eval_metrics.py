"""pass@k / avg@k estimators and the paper-style tables."""

import itertools
import json
import math

import pytest

from verl_ext.eval import avg_at_k, benchmark_metrics, pass_at_k
from verl_ext.eval.paper_tables import AVG_AT_K, AVG_AT_K_AVERAGE, METHODS, PASS_AT_K, PASS_AT_K_AVERAGE
from verl_ext.eval.report import plot_pass_at_k, render_report, render_table


def enumerate_pass_at_k(n, c, k):
    """Exhaustive: the share of all k-subsets of the n samples that contain at least one correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 11))
def test_pass_at_k_equals_exhaustive_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(enumerate_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_special_cases():
    assert pass_at_k(32, 0, 32) == 0.0
    assert pass_at_k(32, 1, 32) == 1.0
    assert pass_at_k(16, 4, 1) == pytest.approx(4 / 16)
    # large n stays finite and matches the closed form
    assert pass_at_k(1000, 3, 100) == pytest.approx(1 - math.comb(997, 100) / math.comb(1000, 100))


@pytest.mark.parametrize("args", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5), (4.5, 2, 1)])
def test_pass_at_k_rejects_impossible_arguments(args):
    with pytest.raises(ValueError):
        pass_at_k(*args)


def test_avg_and_benchmark_metrics():
    problems = [[True, False, False, True], [False] * 4, [True] * 4]
    assert avg_at_k(problems[0], 2) == 0.5
    metrics = benchmark_metrics(problems, ks=(1, 2, 4, 8))
    assert set(metrics) == {"pass@1", "avg@1", "pass@2", "avg@2", "pass@4", "avg@4"}  # k=8 > 4 samples: skipped
    assert metrics["pass@4"] == pytest.approx(100 * 2 / 3)
    assert metrics["avg@4"] == pytest.approx(100 * (0.5 + 0 + 1) / 3)
    assert metrics["pass@1"] == pytest.approx(metrics["avg@4"])  # unbiased pass@1 is the mean accuracy


def test_paper_tables_averages_match_the_printed_ones():
    for table, printed in ((PASS_AT_K, PASS_AT_K_AVERAGE), (AVG_AT_K, AVG_AT_K_AVERAGE)):
        assert len(table) == 18
        for column, value in enumerate(printed):
            mean = sum(row[column] for row in table.values()) / len(table)
            assert mean == pytest.approx(value, abs=0.006), METHODS[column]


def test_table_layout_with_paper_columns():
    runs = {"my-run": {"aime24/pass@8": 50.0, "aime24/pass@16": 60.0, "amc23/pass@8": 90.0, "aime24/avg@8": 20.0}}
    table = render_table(runs, "pass", paper_methods=["GRPO", "w/ SENT"])
    lines = table.splitlines()
    assert lines[0] == "| Pass@k | k | my-run | paper: GRPO | paper: w/ SENT |"
    assert lines[2] == "| AIME24 | 8 | 50.00 | 40.00 | 63.33 |"
    assert lines[3] == "| AIME24 | 16 | 60.00 | 50.00 | 70.00 |"
    assert lines[4] == "| AMC23 | 8 | 90.00 | 87.50 | 92.50 |"
    assert lines[5] == "| **Avg.** | | 66.67 | 59.17 | 75.28 |"  # averaged over the rows shown only
    with pytest.raises(ValueError, match="w/ Magic"):
        render_table(runs, "pass", paper_methods=["w/ Magic"])


def test_report_compares_runs_side_by_side(tmp_path):
    paths = []
    for name, value in (("base", 40.0), ("sent", 55.0)):
        result = {"run": name, "benchmarks": {"aime24": {
            "metrics": {"pass@8": value, "avg@8": value / 2}, "mean_response_tokens": 812.4, "truncated_frac": 0.125}}}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(result))
        paths.append(path)
    text = render_report(paths, ["w/ SENT"])
    assert "| Pass@k | k | base | sent | paper: w/ SENT |" in text
    assert "| AIME24 | 8 | 40.00 | 55.00 | 63.33 |" in text
    assert "| Avg@k | k | base | sent | paper: w/ SENT |" in text
    assert "| base | AIME24 | 812 | 12.5% |" in text
    assert plot_pass_at_k(paths, tmp_path / "passk.png").stat().st_size > 0


def test_report_names_an_unreadable_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        render_report([bad])
