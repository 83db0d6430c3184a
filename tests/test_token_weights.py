"""`verl_ext.token_entropy.sent_token_weights` against a brute-force reference written from the issue's definition."""

import math

import pytest
import torch

from verl_ext.token_entropy import (
    SELECTION_PARAMETERS,
    _kth_smallest,
    _select,
    masked_quantiles,
    select_sent_tokens,
    sent_token_weights,
)


def brute_force_weights(entropy, log_prob, advantages, mask, *, low_entropy_fraction=0.8, entropy_threshold=None,
                        high_cov_fraction=0.002, cov_threshold=None, low_cov_fraction=None, beta_high=0.2,
                        beta_low=0.05):
    """Plain-Python loops over valid tokens, straight from the definition."""
    rows, cols = entropy.shape
    valid = [(i, j) for i in range(rows) for j in range(cols) if float(mask[i, j]) != 0]
    beta = torch.zeros(rows, cols)
    if not valid:
        return beta
    H = {t: float(entropy[t]) for t in valid}
    if entropy_threshold is None:
        k = max(1, int(low_entropy_fraction * len(valid)))
        cut = sorted(H.values())[k - 1]
        low = [t for t in valid if H[t] <= cut]
    else:
        low = [t for t in valid if H[t] < entropy_threshold]
    mean_lp = sum(float(log_prob[t]) for t in valid) / len(valid)
    mean_a = sum(float(advantages[t]) for t in valid) / len(valid)
    cov = {t: (float(log_prob[t]) - mean_lp) * (float(advantages[t]) - mean_a) for t in valid}
    if not low:
        return beta
    if cov_threshold is None:
        k_high = max(1, int(high_cov_fraction * len(low)))
        cov_cut = sorted((cov[t] for t in low), reverse=True)[k_high - 1]
        high = {t for t in low if cov[t] >= cov_cut}
    else:
        high = {t for t in low if cov[t] > cov_threshold}
    rest = [t for t in low if t not in high]
    if low_cov_fraction is not None and rest:
        k_low = max(1, int(low_cov_fraction * len(low)))
        ordered = sorted(cov[t] for t in rest)
        low_cut = ordered[min(k_low, len(ordered)) - 1]
        rest = [t for t in rest if cov[t] <= low_cut]
    for t in high:
        beta[t] = beta_high
    for t in rest:
        beta[t] = beta_low
    return beta


def random_inputs(rows=6, cols=40, seed=0, mask_dtype=torch.bool, lengths=None, ties=False):
    g = torch.Generator().manual_seed(seed)
    entropy = torch.rand(rows, cols, generator=g) * 4
    if ties:  # coarse values: many exact ties at every cut
        entropy = torch.round(entropy * 2) / 2
    log_prob = -torch.rand(rows, cols, generator=g) * 5
    advantages = torch.randn(rows, 1, generator=g).expand(rows, cols).clone()  # GRPO: one advantage per sequence
    lengths = lengths if lengths is not None else torch.randint(0, cols + 1, (rows,), generator=g).tolist()
    mask = torch.zeros(rows, cols)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    if ties:
        log_prob = torch.round(log_prob)
    return entropy, log_prob, advantages, mask.to(mask_dtype)


CASES = [
    # (name, selection kwargs)
    ("defaults", {}),
    ("paper-like fractions", dict(low_entropy_fraction=0.5, high_cov_fraction=0.1)),
    ("all tokens low entropy", dict(low_entropy_fraction=1.0, high_cov_fraction=0.05, beta_low=0.0)),
    ("threshold forms", dict(entropy_threshold=1.5, cov_threshold=0.1)),
    ("entropy threshold, cov quantile", dict(entropy_threshold=2.5, high_cov_fraction=0.2)),
    ("released form", dict(high_cov_fraction=0.0002, low_cov_fraction=0.0002)),
    ("released form, larger fractions", dict(high_cov_fraction=0.05, low_cov_fraction=0.1, beta_high=2.0, beta_low=0.5)),
    ("tiny fraction rounds up to one token", dict(low_entropy_fraction=0.001, high_cov_fraction=0.001)),
]


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.float32])
@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(name, kwargs, mask_dtype, seed):
    entropy, log_prob, advantages, mask = random_inputs(seed=seed, mask_dtype=mask_dtype)
    got = sent_token_weights(entropy, log_prob, advantages, mask, **kwargs)
    want = brute_force_weights(entropy, log_prob, advantages, mask, **kwargs)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)


def dense_path_weights(entropy, log_prob, advantages, mask, **kwargs):
    """The accelerator path (masked tensors, no gathering), run on the CPU."""
    defaults = dict(low_entropy_fraction=0.8, entropy_threshold=None, high_cov_fraction=0.002, cov_threshold=None,
                    low_cov_fraction=None, beta_high=0.2, beta_low=0.05)
    return _select(entropy, log_prob, advantages, mask != 0, **{**defaults, **kwargs}).beta


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("ties", [False, True])
def test_accelerator_path_matches_brute_force(name, kwargs, mask_dtype, ties):
    entropy, log_prob, advantages, mask = random_inputs(seed=7, mask_dtype=mask_dtype, ties=ties)
    got = dense_path_weights(entropy, log_prob, advantages, mask, **kwargs)
    torch.testing.assert_close(got, brute_force_weights(entropy, log_prob, advantages, mask, **kwargs))


@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
def test_ties_at_the_cuts_are_included(name, kwargs):
    entropy, log_prob, advantages, mask = random_inputs(seed=5, ties=True, mask_dtype=torch.int64)
    got = sent_token_weights(entropy, log_prob, advantages, mask, **kwargs)
    torch.testing.assert_close(got, brute_force_weights(entropy, log_prob, advantages, mask, **kwargs))


def test_padding_and_all_masked_rows_get_zero():
    entropy, log_prob, advantages, mask = random_inputs(lengths=[40, 0, 13, 0, 1, 27])
    beta = sent_token_weights(entropy, log_prob, advantages, mask, high_cov_fraction=0.1)
    assert torch.all(beta[~mask] == 0)
    assert torch.all(beta[1] == 0) and torch.all(beta[3] == 0)
    torch.testing.assert_close(beta, brute_force_weights(entropy, log_prob, advantages, mask, high_cov_fraction=0.1))


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.float32])
def test_all_masked_input_returns_zeros(mask_dtype):
    entropy, log_prob, advantages, _ = random_inputs()
    mask = torch.zeros_like(entropy).to(mask_dtype)
    beta = sent_token_weights(entropy, log_prob, advantages, mask)
    assert beta.dtype == torch.float32 and torch.count_nonzero(beta) == 0


def test_counts_follow_the_fractions():
    entropy, log_prob, advantages, mask = random_inputs(rows=16, cols=200, lengths=[200] * 16)
    n = 16 * 200
    sel = select_sent_tokens(entropy, log_prob, advantages, mask, low_entropy_fraction=0.8, high_cov_fraction=0.01)
    assert int(sel.low_entropy.sum()) == math.floor(0.8 * n)
    assert int(sel.high_cov.sum()) == math.floor(0.01 * math.floor(0.8 * n))
    assert torch.all(sel.beta[sel.high_cov] == 0.2)
    assert torch.all(sel.beta[sel.low_entropy & ~sel.high_cov] == 0.05)
    assert torch.all(sel.beta[~sel.low_entropy] == 0)
    # T_low really is the low-entropy end
    assert entropy[sel.low_entropy].max() <= entropy[mask & ~sel.low_entropy].min()


def test_high_covariance_means_positive_logp_times_advantage_deviation():
    entropy, log_prob, advantages, mask = random_inputs(rows=8, cols=64, lengths=[64] * 8, seed=3)
    sel = select_sent_tokens(entropy, log_prob, advantages, mask, low_entropy_fraction=1.0, high_cov_fraction=0.05)
    cov = (log_prob - log_prob[mask].mean()) * (advantages - advantages[mask].mean())
    assert cov[sel.high_cov].min() >= cov[mask & ~sel.high_cov].max()


def test_sort_and_kthvalue_paths_agree():
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 1000):
        values = torch.randn(n, generator=g)
        values[torch.rand(n, generator=g) < 0.3] = float("inf")
        for k in (1, max(1, n // 3), n, n + 5):
            k_tensor = torch.tensor(k)
            cpu = _kth_smallest(values, k_tensor)
            sorted_path = torch.sort(values).values.gather(0, (k_tensor - 1).clamp(max=n - 1).reshape(1)).squeeze(0)
            assert torch.equal(cpu, sorted_path), (n, k)


def test_masked_quantiles_match_torch_quantile():
    entropy, _, _, mask = random_inputs(lengths=[40, 3, 0, 17, 40, 9])
    got = masked_quantiles(entropy, mask, (0.1, 0.5, 0.9))
    want = torch.quantile(entropy[mask], torch.tensor([0.1, 0.5, 0.9]))
    torch.testing.assert_close(got, want)
    assert torch.isnan(masked_quantiles(entropy, torch.zeros_like(mask), (0.5,))).all()


@pytest.mark.parametrize("field", ["entropy", "log_prob", "advantages"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_name_the_field(field, bad):
    inputs = dict(zip(["entropy", "log_prob", "advantages", "response_mask"], random_inputs(lengths=[40] * 6)))
    inputs[field][2, 5] = bad
    with pytest.raises(RuntimeError, match=field):
        sent_token_weights(**inputs)


def test_non_finite_values_under_padding_are_ignored():
    entropy, log_prob, advantages, mask = random_inputs(lengths=[10] * 6)
    entropy[:, 20:] = float("nan")  # padding may hold anything
    beta = sent_token_weights(entropy, log_prob, advantages, mask)
    assert torch.isfinite(beta).all()


def test_mismatched_shapes_name_the_field():
    entropy, log_prob, advantages, mask = random_inputs()
    with pytest.raises(ValueError, match="advantages"):
        sent_token_weights(entropy, log_prob, advantages[:, :-1], mask)
    with pytest.raises(ValueError, match="response_mask"):
        sent_token_weights(entropy, log_prob, advantages, mask[:-1])


@pytest.mark.parametrize("kwargs", [dict(low_entropy_fraction=0.0), dict(high_cov_fraction=1.5),
                                    dict(low_cov_fraction=-0.1)])
def test_fractions_out_of_range_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        sent_token_weights(*random_inputs(), **kwargs)


def test_gradients_do_not_flow_through_the_selection():
    entropy, log_prob, advantages, mask = random_inputs()
    log_prob.requires_grad_(True)
    beta = sent_token_weights(entropy, log_prob, advantages, mask)
    assert not beta.requires_grad


@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
def test_accelerator_path_never_reads_values_back(name, kwargs):
    """On the meta device every host read (`.item()`, `int(tensor)`, boolean indexing, `topk(k=tensor)`) raises, so
    running the non-CPU path there proves it is free of device-to-host syncs (what CUDA's sync debug mode checks)."""
    meta = torch.device("meta")
    entropy, log_prob, advantages = (torch.empty(6, 40, device=meta) for _ in range(3))
    mask = torch.empty(6, 40, dtype=torch.bool, device=meta)
    selection = select_sent_tokens(entropy, log_prob, advantages, mask, **kwargs)
    assert selection.beta.device == meta and selection.beta.shape == (6, 40)
    assert masked_quantiles(entropy, mask, (0.1, 0.5, 0.9)).shape == (3,)
    with pytest.raises((RuntimeError, NotImplementedError)):
        entropy[mask]  # the check has teeth: a data-dependent op fails here


def test_selection_parameters_name_the_keyword_arguments():
    import inspect

    for fn in (sent_token_weights, select_sent_tokens):
        keyword_only = [p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY]
        assert tuple(keyword_only) == SELECTION_PARAMETERS
