"""Evaluation harness: pass@k and avg@k on the paper's six math benchmarks (`python -m verl_ext.eval`)."""

from verl_ext.eval.metrics import avg_at_k, benchmark_metrics, pass_at_k

__all__ = ["pass_at_k", "avg_at_k", "benchmark_metrics"]
