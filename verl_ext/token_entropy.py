"""SENT's token-level selection: which response tokens get a KL penalty, and how strong.

Pure torch (no verl, Ray or Hydra). Every statistic is computed over the valid tokens (mask != 0) of the
tensors passed in, so the caller decides the *selection scope*: pass a whole training step to get a
scope that does not depend on the micro-batch split, or one micro-batch to reproduce KL-Cov and the
authors' release.

Set sizes are exact (k = max(1, floor(fraction * n))) and ties are broken by position, earlier token first
in row-major order of the tensors passed in; see `sent_token_weights`.

On an accelerator the selection never reads a value back to the host: the k-th value is found by sorting
and gathering at a tensor index instead of `topk(k=int)`, ties at it are resolved with a running count
(O(n) memory, no (B, L, L) temporaries), and no boolean indexing (which has a data-dependent output shape)
is used. On the CPU, where a host read is free (the global selection runs in verl's TaskRunner on the CPU),
the valid tokens are gathered first and `kthvalue` replaces the sort: same results, several times faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SELECTION_PARAMETERS", "SentSelection", "masked_quantiles", "select_sent_tokens", "sent_token_weights"]

# The keyword-only knobs of `sent_token_weights` / `select_sent_tokens` (configs map onto these names).
SELECTION_PARAMETERS = (
    "low_entropy_fraction",
    "entropy_threshold",
    "high_cov_fraction",
    "cov_threshold",
    "low_cov_fraction",
    "beta_high",
    "beta_low",
)


@dataclass
class SentSelection:
    """Per-token result of the selection, all shaped like the inputs.

    `beta` is the KL coefficient per token (float32). `low_entropy` and `high_cov` are the sets T_low and
    T_high. `entropy_cut` / `cov_cut` are the thresholds that were applied (scalars): in the fraction forms
    the k-th smallest entropy and the k'-th largest Cov, which the last token taken may equal while tokens
    left out tie with it (+inf / -inf when the set they cut is empty). `num_valid` is the number of valid
    tokens.
    """

    beta: torch.Tensor
    low_entropy: torch.Tensor
    high_cov: torch.Tensor
    entropy_cut: torch.Tensor
    cov_cut: torch.Tensor
    num_valid: torch.Tensor


def sent_token_weights(
    entropy: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    low_entropy_fraction: float = 0.8,
    entropy_threshold: float | None = None,
    high_cov_fraction: float = 0.002,
    cov_threshold: float | None = None,
    low_cov_fraction: float | None = None,
    beta_high: float = 0.2,
    beta_low: float = 0.05,
) -> torch.Tensor:
    """KL coefficient beta_t per token (float32, shaped like `entropy`).

    Every set has an exact size, and every tie is broken by position: of equal values, the earlier valid
    token in row-major order of the tensors passed in is taken first.

    - T_low: exactly the k = max(1, floor(low_entropy_fraction * N_valid)) valid tokens with the smallest
      entropy; or H_t < entropy_threshold when that is set.
    - Cov_t = (logp_t - mean logp) * (A_t - mean A), means over all valid tokens passed in, in float64 (a
      constant advantage gives Cov exactly 0).
    - T_high: exactly the k' = max(1, floor(high_cov_fraction * |T_low|)) tokens of T_low with the largest
      Cov_t; or Cov_t > cov_threshold when that is set.
    - beta_t = beta_high on T_high, beta_low on T_low minus T_high, 0 elsewhere. With `low_cov_fraction`
      (the released code's form) beta_low goes only to exactly k'' = max(1, floor(low_cov_fraction * |T_low|))
      tokens of T_low minus T_high with the smallest Cov_t (all of them when fewer remain).

    Why exact counts: with "ties at the cut included", a step whose rewards were all equal (every Cov 0) put
    all of T_low into T_high, 4x the penalty exactly when the policy gradient is 0, and bf16-quantised
    entropies tied so much that T_low was every token. KL-Cov selects exact counts too (`topk`).

    An all-masked input returns zeros.
    """
    return select_sent_tokens(
        entropy,
        log_prob,
        advantages,
        response_mask,
        low_entropy_fraction=low_entropy_fraction,
        entropy_threshold=entropy_threshold,
        high_cov_fraction=high_cov_fraction,
        cov_threshold=cov_threshold,
        low_cov_fraction=low_cov_fraction,
        beta_high=beta_high,
        beta_low=beta_low,
    ).beta


@torch.no_grad()
def select_sent_tokens(
    entropy: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    low_entropy_fraction: float = 0.8,
    entropy_threshold: float | None = None,
    high_cov_fraction: float = 0.002,
    cov_threshold: float | None = None,
    low_cov_fraction: float | None = None,
    beta_high: float = 0.2,
    beta_low: float = 0.05,
) -> SentSelection:
    """`sent_token_weights` plus the sets and cut-offs behind it (for metrics and tests)."""
    _check_fraction("low_entropy_fraction", low_entropy_fraction, required=entropy_threshold is None)
    _check_fraction("high_cov_fraction", high_cov_fraction, required=cov_threshold is None)
    _check_fraction("low_cov_fraction", low_cov_fraction, required=False)
    _check_shapes(entropy=entropy, log_prob=log_prob, advantages=advantages, response_mask=response_mask)

    valid = response_mask != 0
    arguments = locals()
    kwargs = {name: arguments[name] for name in SELECTION_PARAMETERS}
    if entropy.device.type != "cpu":
        return _select(entropy, log_prob, advantages, valid, **kwargs)
    # CPU: work on the valid tokens only (host reads are free here) and scatter back; same math, fewer passes.
    index = valid.flatten().nonzero().squeeze(1)
    compact = _select(
        *(t.detach().flatten()[index] for t in (entropy, log_prob, advantages)), valid=None, host_reads=True, **kwargs
    )

    def scatter(values: torch.Tensor, fill) -> torch.Tensor:
        out = torch.full((valid.numel(),), fill, dtype=values.dtype)
        out[index] = values
        return out.view(valid.shape)

    return SentSelection(
        beta=scatter(compact.beta, 0.0),
        low_entropy=scatter(compact.low_entropy, False),
        high_cov=scatter(compact.high_cov, False),
        entropy_cut=compact.entropy_cut,
        cov_cut=compact.cov_cut,
        num_valid=compact.num_valid,
    )


def _select(
    entropy: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    valid: torch.Tensor | None,
    *,
    low_entropy_fraction: float,
    entropy_threshold: float | None,
    high_cov_fraction: float,
    cov_threshold: float | None,
    low_cov_fraction: float | None,
    beta_high: float,
    beta_low: float,
    host_reads: bool = False,
) -> SentSelection:
    """The selection on tensors of any shape; `valid=None` means every position is a valid token.

    `host_reads=True` (CPU only) lets ties at a cut be resolved by reading counts back; same result.
    """
    _check_finite("entropy", entropy, valid)
    _check_finite("log_prob", log_prob, valid)
    _check_finite("advantages", advantages, valid)
    entropy = entropy.detach().float()
    # float64 for the Cov means and products: a constant advantage centres to exactly 0 (float32 sums leave
    # rounding noise that would rank tokens), and Cov ties are exact ties.
    log_prob, advantages = log_prob.detach().double(), advantages.detach().double()
    device = entropy.device

    def only_valid(values, fill):
        return values if valid is None else torch.where(valid, values, fill)

    def and_valid(condition):
        return condition if valid is None else valid & condition

    num_valid = torch.tensor(entropy.numel(), device=device) if valid is None else valid.sum()

    # T_low: exactly k tokens, so quantised (bf16) entropies cannot make every token "low".
    if entropy_threshold is not None:
        entropy_cut = torch.tensor(float(entropy_threshold), device=device)
        low = and_valid(entropy < entropy_cut)
    else:
        k = _fraction_count(low_entropy_fraction, num_valid)
        low, entropy_cut = _take_smallest(entropy, valid, k, host_reads)

    # Cov_t, centred over every valid token of the scope (not only T_low).
    denom = num_valid.clamp(min=1).double()
    mean_logp = only_valid(log_prob, 0.0).sum() / denom
    mean_adv = only_valid(advantages, 0.0).sum() / denom
    cov = (log_prob - mean_logp) * (advantages - mean_adv)

    # T_high within T_low: exactly k' tokens, so an all-equal Cov (all rewards equal) cannot put all of T_low in it.
    num_low = low.sum()
    if cov_threshold is not None:
        cov_cut = torch.tensor(float(cov_threshold), dtype=torch.float64, device=device)
        high = low & (cov > cov_cut)
    else:
        k_high = _fraction_count(high_cov_fraction, num_low)
        high, negated_cut = _take_smallest(-cov, low, k_high, host_reads)  # largest Cov = smallest -Cov
        cov_cut = -negated_cut

    rest = low & ~high
    if low_cov_fraction is not None:
        k_low_cov = _fraction_count(low_cov_fraction, num_low)
        rest, _ = _take_smallest(cov, rest, k_low_cov, host_reads)  # fewer than k'' when fewer remain

    zero = torch.zeros((), dtype=torch.float32, device=device)
    beta = torch.where(high, beta_high, torch.where(rest, beta_low, zero)).to(torch.float32)
    return SentSelection(
        beta=beta,
        low_entropy=low,
        high_cov=high,
        entropy_cut=entropy_cut,
        cov_cut=cov_cut.float(),
        num_valid=num_valid,
    )


@torch.no_grad()
def masked_quantiles(values: torch.Tensor, mask: torch.Tensor, qs: tuple[float, ...]) -> torch.Tensor:
    """Quantiles (linear interpolation, like `torch.quantile`) of `values` over positions where mask != 0.

    Returns NaN for an all-masked input. Used for metrics only.
    """
    valid = mask != 0
    if values.device.type == "cpu":  # numpy's partition-based quantile: O(n), no full sort of millions of tokens
        picked = values.detach().float()[valid].numpy()
        if picked.size == 0:
            return torch.full((len(qs),), float("nan"))
        return torch.from_numpy(np.quantile(picked, qs).astype(np.float32))
    n = valid.sum()
    ordered = torch.sort(torch.where(valid, values.float(), float("inf")).flatten()).values
    # positions from Python floats: torch.tensor(qs, device=...) would be a blocking host-to-device copy (a sync)
    pos = torch.stack([(n - 1).clamp(min=0).double() * q for q in qs])
    lo, hi = pos.floor().long(), pos.ceil().long()
    frac = (pos - lo.double()).float()
    # (hi == lo) avoids inf - inf = nan when a quantile hits exactly one element
    out = torch.where(hi == lo, ordered[lo], ordered[lo] + (ordered[hi] - ordered[lo]) * frac)
    return torch.where(n > 0, out, torch.full_like(out, float("nan")))


def _fraction_count(fraction: float, count: torch.Tensor) -> torch.Tensor:
    """max(1, floor(fraction * count)) as a tensor; float64 so it matches Python's `int(fraction * n)`."""
    return torch.floor(count.double() * fraction).long().clamp(min=1)


def _take_smallest(
    values: torch.Tensor, eligible: torch.Tensor | None, k: torch.Tensor, host_reads: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly min(k, #eligible) eligible entries with the smallest values, and the k-th smallest value.

    Ties at the cut go to the earliest positions in row-major order, so the result is a function of the
    values and their order only (in the global scope: the step batch's order, whatever the split). Without
    host reads: the k-th smallest value v, every entry below v, then the first (k - #below) entries equal to
    v by a running count; O(n) memory. With `host_reads` (CPU): the same result with fewer passes over
    millions of tokens (see `_take_smallest_reading_counts`).
    `eligible=None` means every entry is eligible; the k-th value is +inf when fewer than k are eligible.
    """
    if host_reads:
        return _take_smallest_reading_counts(values, eligible, k)
    keyed = values if eligible is None else torch.where(eligible, values, float("inf"))
    keyed = keyed.reshape(-1)  # row-major order, whatever the strides
    cut = _kth_smallest(keyed, k)
    below = keyed < cut  # ineligible entries are +inf, never below
    at_cut = keyed == cut
    if eligible is not None:
        at_cut &= eligible.reshape(-1)
    first_at_cut = at_cut.cumsum(0) <= k - below.sum()
    return (below | (at_cut & first_at_cut)).view(values.shape), cut


def _take_smallest_reading_counts(
    values: torch.Tensor, eligible: torch.Tensor | None, k: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_take_smallest` on the CPU: eligible entries are gathered (in order) instead of masked with +inf, and the
    tied entries are ranked only when the cut value is tied past the k-th entry."""
    flat = values.reshape(-1)
    if eligible is not None:
        index = eligible.reshape(-1).nonzero().squeeze(1)
        taken_eligible, cut = _take_smallest_reading_counts(flat[index], None, k)
        taken = torch.zeros(flat.numel(), dtype=torch.bool)
        taken[index] = taken_eligible
        return taken.view(values.shape), cut
    k = int(k)
    if k > flat.numel():  # too few entries: take them all; the k-th value does not exist
        return torch.ones(values.shape, dtype=torch.bool), torch.tensor(float("inf"), dtype=values.dtype)
    cut = _kth_smallest(flat, torch.tensor(k))
    taken = flat <= cut
    surplus = int(taken.sum()) - k
    if surplus > 0:  # the cut value is tied past the k-th entry: drop the latest of the tied
        tied = (flat == cut).nonzero().squeeze(1)
        taken[tied[-surplus:]] = False
    return taken.view(values.shape), cut


def _kth_smallest(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The k-th smallest (1-based) entry of `values`, with masked entries already set to +inf.

    When fewer than k entries are finite the result is +inf, which selects nothing further down.
    """
    flat = values.flatten()
    if flat.numel() == 0:
        return torch.tensor(float("inf"), device=values.device)
    if flat.device.type == "cpu":
        k = min(int(k), flat.numel())
        if k <= flat.numel() // 256:  # a small k (T_high): partial top-k is several times faster than kthvalue
            return torch.topk(flat, k, largest=False, sorted=False).values.max()
        return torch.kthvalue(flat, k).values
    index = (k - 1).clamp(max=flat.numel() - 1).reshape(1)
    return torch.sort(flat).values.gather(0, index).squeeze(0)


def _check_fraction(name: str, value: float | None, *, required: bool) -> None:
    if value is None:
        if required:
            raise ValueError(f"{name} must be set when its threshold form is not used")
        return
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")


def _check_shapes(**tensors: torch.Tensor) -> None:
    reference_name, reference = next(iter(tensors.items()))
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.shape != reference.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but {reference_name} has shape {tuple(reference.shape)}"
            )


def _check_finite(name: str, tensor: torch.Tensor, valid: torch.Tensor | None) -> None:
    # _assert_async: raises at once on the CPU, and on an accelerator fails the stream without a host sync.
    finite = torch.isfinite(tensor)
    ok = finite.all() if valid is None else (finite | ~valid).all()
    torch._assert_async(ok, f"{name} has NaN or inf at valid (response_mask != 0) positions")
