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


def brute_force_selection(entropy, log_prob, advantages, mask, *, low_entropy_fraction=0.8, entropy_threshold=None,
                          high_cov_fraction=0.002, cov_threshold=None, low_cov_fraction=None, beta_high=0.2,
                          beta_low=0.05):
    """Plain-Python loops over valid tokens, straight from the contract: exact counts, every tie to the earlier
    valid token in row-major order, Cov centred with float64 means. Returns (beta, T_low, T_high) as tensors."""
    rows, cols = entropy.shape
    valid = [(i, j) for i in range(rows) for j in range(cols) if float(mask[i, j]) != 0]  # row-major order
    position = {t: p for p, t in enumerate(valid)}
    beta = torch.zeros(rows, cols)
    low_mask, high_mask = torch.zeros(rows, cols, dtype=torch.bool), torch.zeros(rows, cols, dtype=torch.bool)
    if not valid:
        return beta, low_mask, high_mask
    H = {t: float(entropy[t]) for t in valid}
    if entropy_threshold is None:
        k = max(1, math.floor(low_entropy_fraction * len(valid)))
        low = sorted(valid, key=lambda t: (H[t], position[t]))[:k]
    else:
        low = [t for t in valid if H[t] < entropy_threshold]
    mean_lp = math.fsum(float(log_prob[t]) for t in valid) / len(valid)
    mean_a = math.fsum(float(advantages[t]) for t in valid) / len(valid)
    cov = {t: (float(log_prob[t]) - mean_lp) * (float(advantages[t]) - mean_a) for t in valid}
    if cov_threshold is None:
        k_high = max(1, math.floor(high_cov_fraction * len(low)))
        high = sorted(low, key=lambda t: (-cov[t], position[t]))[:k_high] if low else []
    else:
        high = [t for t in low if cov[t] > cov_threshold]
    rest = [t for t in low if t not in set(high)]
    if low_cov_fraction is not None:
        k_low = max(1, math.floor(low_cov_fraction * len(low)))
        rest = sorted(rest, key=lambda t: (cov[t], position[t]))[:k_low]
    for t in rest:
        beta[t] = beta_low
    for t in high:
        beta[t] = beta_high
    for t in low:
        low_mask[t] = True
    for t in high:
        high_mask[t] = True
    return beta, low_mask, high_mask


def brute_force_weights(*args, **kwargs):
    return brute_force_selection(*args, **kwargs)[0]


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


def bf16(values):
    """Round to bfloat16 and back: the 8-bit mantissa that made every entropy tie in a real bf16 run."""
    return values.to(torch.bfloat16).float()


def tie_heavy_inputs(kind, mask_dtype=torch.bool, seed=11):
    """Inputs whose cuts fall inside runs of equal values. Quantised values sum exactly in float64, so the
    reference and the implementation centre Cov to the same bits and only the tie rule decides."""
    rows, cols = 6, 40
    g = torch.Generator().manual_seed(seed)
    entropy = bf16(torch.rand(rows, cols, generator=g) * 0.05)  # ~ 30 distinct values over 240 tokens
    log_prob = bf16(-torch.rand(rows, cols, generator=g) * 0.1)
    advantages = torch.tensor([1.0, -0.5, 1.0, -1.0, 0.5, -0.5]).unsqueeze(1).expand(rows, cols).clone()
    lengths = [40, 7, 0, 40, 23, 31]
    if kind == "coarse entropies and log-probs":
        entropy, log_prob = torch.round(entropy * 100) / 64, torch.round(log_prob * 20) / 4
    elif kind == "one advantage for the whole scope":  # every Cov is 0: T_high is the first k' tokens of T_low
        advantages = torch.full((rows, cols), 0.3)
    elif kind == "all advantages 0":  # what a step whose rewards are all equal gives under GRPO
        advantages = torch.zeros(rows, cols)
    elif kind == "all entropies equal":
        entropy = torch.full((rows, cols), 0.25)
    elif kind == "one valid row":
        lengths = [0, 0, 0, 29, 0, 0]
    elif kind == "all masked":
        lengths = [0] * rows
    elif kind != "bf16-quantised entropies and log-probs":
        raise ValueError(kind)
    mask = torch.zeros(rows, cols)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return entropy, log_prob, advantages, mask.to(mask_dtype)


TIE_HEAVY = ["bf16-quantised entropies and log-probs", "coarse entropies and log-probs",
             "one advantage for the whole scope", "all advantages 0", "all entropies equal", "one valid row",
             "all masked"]


CASES = [
    # (name, selection kwargs)
    ("defaults", {}),
    ("paper-like fractions", {"low_entropy_fraction": 0.5, "high_cov_fraction": 0.1}),
    ("all tokens low entropy", {"low_entropy_fraction": 1.0, "high_cov_fraction": 0.05, "beta_low": 0.0}),
    ("threshold forms", {"entropy_threshold": 1.5, "cov_threshold": 0.1}),
    ("entropy threshold, cov quantile", {"entropy_threshold": 2.5, "high_cov_fraction": 0.2}),
    ("released form", {"high_cov_fraction": 0.0002, "low_cov_fraction": 0.0002}),
    ("released form, larger fractions",
     {"high_cov_fraction": 0.05, "low_cov_fraction": 0.1, "beta_high": 2.0, "beta_low": 0.5}),
    ("released form, more than remain",
     {"low_entropy_fraction": 0.3, "high_cov_fraction": 0.6, "low_cov_fraction": 0.7}),
    ("tiny fraction rounds up to one token", {"low_entropy_fraction": 0.001, "high_cov_fraction": 0.001}),
]
# Fraction forms only: the threshold forms on tie-heavy inputs are covered by CASES on random inputs.
TIE_CASES = [c for c in CASES if "threshold" not in c[0]] + [("cov threshold at a tie", {"cov_threshold": 0.0})]


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.float32])
@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(name, kwargs, mask_dtype, seed):
    entropy, log_prob, advantages, mask = random_inputs(seed=seed, mask_dtype=mask_dtype)
    got = sent_token_weights(entropy, log_prob, advantages, mask, **kwargs)
    want = brute_force_weights(entropy, log_prob, advantages, mask, **kwargs)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.float32])
@pytest.mark.parametrize("kind", TIE_HEAVY)
@pytest.mark.parametrize("name,kwargs", TIE_CASES, ids=[c[0] for c in TIE_CASES])
def test_tie_heavy_inputs_match_brute_force_on_both_paths(name, kwargs, kind, mask_dtype):
    """Ties at every cut: the sets, not only beta, equal the reference on the CPU path and the accelerator path."""
    entropy, log_prob, advantages, mask = tie_heavy_inputs(kind, mask_dtype)
    assert_both_paths_match_brute_force(entropy, log_prob, advantages, mask, **kwargs)


@pytest.mark.parametrize("name,kwargs", TIE_CASES, ids=[c[0] for c in TIE_CASES])
def test_tie_heavy_step_at_scale_matches_brute_force_on_both_paths(name, kwargs):
    """6,400 tokens with bf16 entropies and 0.05-step log-probs: large enough that the CPU path finds small cuts
    (T_high) with a partial top-k and resolves long runs of ties from counts."""
    g = torch.Generator().manual_seed(3)
    entropy = bf16(torch.rand(16, 400, generator=g) * 0.05)
    log_prob = torch.round(-torch.rand(16, 400, generator=g) * 100) / 20
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5]).repeat(4).unsqueeze(1).expand(16, 400).clone()
    mask = torch.ones(16, 400, dtype=torch.bool)
    assert_both_paths_match_brute_force(entropy, log_prob, advantages, mask, **kwargs)


def assert_both_paths_match_brute_force(entropy, log_prob, advantages, mask, **kwargs):
    """The sets, not only beta, of the CPU path and of the accelerator path equal the brute-force reference."""
    want_beta, want_low, want_high = brute_force_selection(entropy, log_prob, advantages, mask, **kwargs)
    for selection in (select_sent_tokens(entropy, log_prob, advantages, mask, **kwargs),
                      dense_path_selection(entropy, log_prob, advantages, mask, **kwargs)):
        assert torch.equal(selection.low_entropy, want_low)
        assert torch.equal(selection.high_cov, want_high)
        assert torch.equal(selection.beta, want_beta)


def dense_path_selection(entropy, log_prob, advantages, mask, **kwargs):
    """The accelerator path (masked tensors, no gathering), run on the CPU."""
    defaults = {"low_entropy_fraction": 0.8, "entropy_threshold": None, "high_cov_fraction": 0.002,
                "cov_threshold": None, "low_cov_fraction": None, "beta_high": 0.2, "beta_low": 0.05}
    return _select(entropy, log_prob, advantages, mask != 0, **{**defaults, **kwargs})


def dense_path_weights(entropy, log_prob, advantages, mask, **kwargs):
    return dense_path_selection(entropy, log_prob, advantages, mask, **kwargs).beta


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("ties", [False, True])
def test_accelerator_path_matches_brute_force(name, kwargs, mask_dtype, ties):
    entropy, log_prob, advantages, mask = random_inputs(seed=7, mask_dtype=mask_dtype, ties=ties)
    got = dense_path_weights(entropy, log_prob, advantages, mask, **kwargs)
    torch.testing.assert_close(got, brute_force_weights(entropy, log_prob, advantages, mask, **kwargs))


# Small enough to check by hand. beta_high=2, beta_low=1 so the expected tables read as "which set".
POSITION_TIE_TABLE = [
    # (name, entropy, log_prob, advantages, mask, kwargs, expected beta)
    ("all entropies equal: the first k tokens", [[1, 1, 1, 1], [1, 1, 1, 1]], [[-1] * 4] * 2, [[0] * 4] * 2,
     [[1] * 4] * 2, {"low_entropy_fraction": 0.5, "high_cov_fraction": 0.25}, [[2, 1, 1, 1], [0, 0, 0, 0]]),
    ("the tie at the entropy cut goes to the earlier token", [[0.5, 0.1, 0.5], [0.1, 0.5, 0.5]], [[-1] * 3] * 2,
     [[0] * 3] * 2, [[1, 1, 1], [1, 1, 0]], {"low_entropy_fraction": 0.6, "high_cov_fraction": 0.34},
     [[2, 1, 0], [1, 0, 0]]),
    ("masked tokens take no place in the order", [[1, 1], [1, 1]], [[-1, -1], [-1, -1]], [[0, 0], [0, 0]],
     [[0, 1], [1, 1]], {"low_entropy_fraction": 0.5, "high_cov_fraction": 1.0}, [[0, 2], [0, 0]]),
    ("equal Cov in different rows: the earlier row", [[0, 0], [0, 0]], [[-1, -3], [-3, -1]], [[1, 1], [-1, -1]],
     [[1, 1], [1, 1]], {"low_entropy_fraction": 1.0, "high_cov_fraction": 0.25}, [[2, 1], [1, 1]]),
    ("both tied Cov when k' covers them", [[0, 0], [0, 0]], [[-1, -3], [-3, -1]], [[1, 1], [-1, -1]],
     [[1, 1], [1, 1]], {"low_entropy_fraction": 1.0, "high_cov_fraction": 0.5}, [[2, 1], [2, 1]]),
    ("released form: the earlier of the tied lowest Cov", [[0, 0], [0, 0]], [[-1, -3], [-3, -1]],
     [[1, 1], [-1, -1]], [[1, 1], [1, 1]],
     {"low_entropy_fraction": 1.0, "high_cov_fraction": 0.25, "low_cov_fraction": 0.25}, [[2, 1], [0, 0]]),
    ("all rewards equal: one token at beta_high, not all of T_low", [[0.2, 0.1, 0.3, 0.4]], [[-1, -2, -3, -4]],
     [[0.7] * 4], [[1, 1, 1, 1]], {"low_entropy_fraction": 0.75, "high_cov_fraction": 0.34}, [[2, 1, 1, 0]]),
]


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.float32])
@pytest.mark.parametrize("name,entropy,log_prob,advantages,mask,kwargs,expected", POSITION_TIE_TABLE,
                         ids=[row[0] for row in POSITION_TIE_TABLE])
def test_ties_go_to_the_earlier_token(name, entropy, log_prob, advantages, mask, kwargs, expected, mask_dtype):
    inputs = [torch.tensor(v, dtype=torch.float32) for v in (entropy, log_prob, advantages)]
    mask = torch.tensor(mask).to(mask_dtype)
    kwargs = dict(beta_high=2.0, beta_low=1.0, **kwargs)
    expected = torch.tensor(expected, dtype=torch.float32)
    torch.testing.assert_close(sent_token_weights(*inputs, mask, **kwargs), expected)
    torch.testing.assert_close(dense_path_weights(*inputs, mask, **kwargs), expected)
    torch.testing.assert_close(brute_force_weights(*inputs, mask, **kwargs), expected)  # the reference agrees too


@pytest.mark.parametrize("kind", TIE_HEAVY)
@pytest.mark.parametrize("name,kwargs", [c for c in TIE_CASES if "threshold" not in c[0]],
                         ids=[c[0] for c in TIE_CASES if "threshold" not in c[0]])
def test_set_sizes_are_exact(name, kwargs, kind):
    """|T_low| = k, |T_high| = k', and the released form's beta_low set has min(k'', |T_low| - k') tokens, however
    many values tie (with "ties included", all-equal Cov gave |T_high| = |T_low|)."""
    entropy, log_prob, advantages, mask = tie_heavy_inputs(kind)
    kwargs = {key: value for key, value in kwargs.items() if not key.startswith("beta")}  # beta_low > 0 to count
    fractions = {"low_entropy_fraction": 0.8, "high_cov_fraction": 0.002, **kwargs}
    selection = select_sent_tokens(entropy, log_prob, advantages, mask, **kwargs)
    n = int(mask.sum())
    k = min(n, max(1, math.floor(fractions["low_entropy_fraction"] * n)))  # 0 when every token is masked
    k_high = min(k, max(1, math.floor(fractions["high_cov_fraction"] * k)))
    assert int(selection.low_entropy.sum()) == k
    assert int(selection.high_cov.sum()) == k_high
    beta_low_count = int(((selection.beta > 0) & ~selection.high_cov).sum())
    if fractions.get("low_cov_fraction") is None:
        assert beta_low_count == k - k_high
    else:
        assert beta_low_count == min(max(1, math.floor(fractions["low_cov_fraction"] * k)), k - k_high)
    if n == 0:
        assert selection.entropy_cut == float("inf") and selection.cov_cut == float("-inf")


def test_constant_advantage_centres_to_exactly_zero():
    """0.1 summed in float32 over 240 tokens is not 24.0, so float32 centring gave Cov_t = +-1e-9 noise that decided
    T_high. With float64 means every Cov is 0 and T_high is the first k' tokens of T_low."""
    entropy, log_prob, _, mask = random_inputs(lengths=[40] * 6, seed=4)
    advantages = torch.full_like(entropy, 0.1)
    assert advantages.sum() / 240 != torch.tensor(0.1)  # the float32 trap is real for these inputs
    selection = select_sent_tokens(entropy, log_prob, advantages, mask, low_entropy_fraction=1.0,
                                   high_cov_fraction=0.05)
    assert selection.cov_cut == 0
    first = torch.zeros(240, dtype=torch.bool)
    first[:12] = True
    assert torch.equal(selection.high_cov, first.view(6, 40))


def test_padding_width_does_not_change_the_selection():
    """Position means the order of the valid tokens, so padding a step batch wider changes nothing."""
    entropy, log_prob, advantages, mask = tie_heavy_inputs("coarse entropies and log-probs")
    wider = [torch.nn.functional.pad(t, (0, 9)) for t in (entropy, log_prob, advantages, mask)]
    kwargs = {"low_entropy_fraction": 0.5, "high_cov_fraction": 0.1, "low_cov_fraction": 0.2}
    narrow_beta = sent_token_weights(entropy, log_prob, advantages, mask, **kwargs)
    for beta in (sent_token_weights(*wider, **kwargs), dense_path_weights(*wider, **kwargs)):
        assert torch.equal(beta[:, :40], narrow_beta) and not beta[:, 40:].any()


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
    for beta in (sent_token_weights(entropy, log_prob, advantages, mask, low_cov_fraction=0.1),
                 dense_path_weights(entropy, log_prob, advantages, mask, low_cov_fraction=0.1)):
        assert beta.dtype == torch.float32 and torch.count_nonzero(beta) == 0


def test_counts_follow_the_fractions_at_scale():
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


@pytest.mark.parametrize("tied", [False, True])
def test_sort_and_kthvalue_paths_agree(tied):
    """The CPU k-th value (partial top-k for k <= n / 256, else kthvalue) equals the accelerator's sort + gather."""
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 1000, 5000):
        values = torch.randint(0, 4, (n,), generator=g).double() if tied else torch.randn(n, generator=g)
        values[torch.rand(n, generator=g) < 0.3] = float("inf")
        for k in (1, 3, n // 256, max(1, n // 3), n, n + 5):
            if k < 1:
                continue
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


@pytest.mark.parametrize("kwargs", [{"low_entropy_fraction": 0.0}, {"high_cov_fraction": 1.5},
                                    {"low_cov_fraction": -0.1}])
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
