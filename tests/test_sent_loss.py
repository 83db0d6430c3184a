"""SENT's actor loss driven through verl 0.9.1's real loss contract: engine-layout (nested) micro-batches,
`ppo_loss` / `agg_loss` normalisation, `omega_conf_to_dataclass` configs and `Metric` aggregation."""

from functools import partial

import pytest
import torch
from verl.utils.metric import reduce_metrics
from verl.utils.py_functional import append_to_dict
from verl.workers.utils.losses import ppo_loss

from recipe.sent.config import SentPolicyLossConfig
from recipe.sent.losses import BETA_FIELD, sent_actor_loss
from recipe.sent.selection import padded_beta, step_sent_beta

PROMPTS = [5, 3, 7, 4, 6, 2, 5, 3]
RESPONSES = [30, 12, 25, 40, 8, 33, 19, 27]


def with_step_beta(batch, policy_loss_cfg):
    beta, metrics = step_sent_beta(batch.td.select("response_mask", "entropy", "old_log_probs", "advantages"),
                                   policy_loss_cfg)
    batch.td[BETA_FIELD] = beta[BETA_FIELD]
    return metrics


def test_loss_runs_on_engine_layout_and_reports_metrics(actor_config, engine_batch, engine_loss):
    cfg = actor_config(**{"kl_loss_coef": 0.001, "policy_loss.high_cov_fraction": 0.1})
    assert isinstance(cfg.policy_loss, SentPolicyLossConfig)
    batch = engine_batch(PROMPTS, RESPONSES, hole_every=7)
    step_metrics = with_step_beta(batch, cfg.policy_loss)
    _loss, grad, metrics = engine_loss(partial(sent_actor_loss, config=cfg), batch, micro_batches=4)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0

    aggregated = {}
    for micro in metrics:
        append_to_dict(aggregated, micro)
    reduced = reduce_metrics(aggregated)
    for key in ("actor/pg_loss", "kl_loss", "sent/kl_term", "sent/penalised_kl_mean", "sent/penalised_off_policy_frac",
                "actor/pg_clipfrac"):
        assert key in reduced, key
    assert reduced["sent/kl_term"] > 0
    assert 0 < reduced["sent/penalised_off_policy_frac"] <= 1
    for key in ("sent/low_entropy_frac", "sent/high_cov_frac", "sent/entropy_cut", "sent/cov_cut",
                "sent/entropy_p10", "sent/entropy_p50", "sent/entropy_p90", "sent/penalised_frac"):
        assert key in step_metrics, key
    assert step_metrics["sent/low_entropy_frac"] == pytest.approx(0.8, abs=0.01)
    assert step_metrics["sent/high_cov_frac"] == pytest.approx(0.1, abs=0.01)  # a share of T_low
    assert step_metrics["sent/entropy_p10"] < step_metrics["sent/entropy_p50"] < step_metrics["sent/entropy_p90"]


def test_kl_term_equals_hand_computed_weighted_k3(actor_config, engine_batch, engine_loss):
    """The SENT term is agg_loss(beta * k3(logp, ref)) over the global token count: check it by hand."""
    cfg = actor_config(**{"policy_loss.high_cov_fraction": 0.1})
    batch = engine_batch(PROMPTS, RESPONSES)
    with_step_beta(batch, cfg.policy_loss)
    _, _, metrics = engine_loss(partial(sent_actor_loss, config=cfg), batch, micro_batches=2)
    got = sum(m["sent/kl_term"].aggregate() for m in metrics)

    mask = batch.td["response_mask"].to_padded_tensor(0).bool()
    logp = torch.nn.utils.rnn.pad_sequence(batch.current_response_log_probs(), batch_first=True)
    ref = batch.td["ref_log_prob"].to_padded_tensor(0.0)
    beta = padded_beta(batch.td[BETA_FIELD])
    k3 = torch.exp(ref - logp) - (ref - logp) - 1
    want = (beta * k3)[mask].sum() / mask.sum()
    assert got == pytest.approx(float(want), rel=1e-5)


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("dp_size,micro_batches", [(1, 2), (1, 4), (2, 1), (2, 2), (2, 4)])
def test_global_scope_gradient_is_split_invariant(actor_config, engine_batch, engine_loss, loss_agg_mode, dp_size,
                                                  micro_batches):
    cfg = actor_config(**{"loss_agg_mode": loss_agg_mode, "kl_loss_coef": 0.001,
                          "policy_loss.high_cov_fraction": 0.05})
    batch = engine_batch(PROMPTS, RESPONSES, hole_every=5)
    with_step_beta(batch, cfg.policy_loss)
    loss_fn = partial(sent_actor_loss, config=cfg)
    loss_1, grad_1, _ = engine_loss(loss_fn, batch, dp_size=1, micro_batches=1)
    loss_n, grad_n, _ = engine_loss(loss_fn, batch, dp_size=dp_size, micro_batches=micro_batches)
    assert loss_n == pytest.approx(loss_1, rel=1e-5)
    torch.testing.assert_close(grad_n, grad_1, rtol=1e-5, atol=1e-7)


def test_global_selection_is_independent_of_mini_batch_split(actor_config, engine_batch):
    """Selecting over a whole step gives every token the same beta whichever mini-batch it is trained in;
    selecting per mini-batch (what a loss-side selection does) does not."""
    cfg = actor_config(**{"policy_loss.high_cov_fraction": 0.05})
    batch = engine_batch(PROMPTS, RESPONSES)
    with_step_beta(batch, cfg.policy_loss)
    step_beta = padded_beta(batch.td[BETA_FIELD])
    halves = [batch.rows(range(4)), batch.rows(range(4, 8))]
    per_half = [padded_beta(step_sent_beta(h.select("response_mask", "entropy", "old_log_probs", "advantages"),
                                           cfg.policy_loss)[0][BETA_FIELD]) for h in halves]
    assert not all(torch.equal(step_beta[i * 4:(i + 1) * 4, : b.shape[1]], b) for i, b in enumerate(per_half))


def test_micro_batch_scope_depends_on_the_split(actor_config, engine_batch, engine_loss):
    """The KL-Cov / released-code behaviour we offer for ablations: the gradient changes with the micro-batch
    count (verl #7818). This is what `selection_scope=global` fixes."""
    cfg = actor_config(**{"policy_loss.selection_scope": "micro_batch", "policy_loss.high_cov_fraction": 0.0002,
                          "policy_loss.kl_target": "old"})
    batch = engine_batch(PROMPTS, RESPONSES)
    loss_fn = partial(sent_actor_loss, config=cfg)
    _, grad_1, _ = engine_loss(loss_fn, batch, micro_batches=1)
    _, grad_4, _ = engine_loss(loss_fn, batch, micro_batches=4)
    assert not torch.allclose(grad_1, grad_4, rtol=1e-4, atol=1e-6)


def kl_cov_cut_gaps(batch, ratio, micro_batches):
    """Per micro-batch, the gap between the k-th and (k+1)-th largest Cov, k = max(1, int(ratio * n)) as in verl's
    `kl_cov` (current log-probs, valid tokens, float64)."""
    logp, per_micro, gaps = batch.current_response_log_probs(), batch.batch_size // micro_batches, []
    for start in range(0, batch.batch_size, per_micro):
        rows = range(start, start + per_micro)
        valid = torch.cat([batch.td["response_mask"][i] for i in rows]).bool()
        lp = torch.cat([logp[i] for i in rows]).double()[valid]
        adv = torch.cat([batch.td["advantages"][i] for i in rows]).double()[valid]
        cov = (lp - lp.mean()) * (adv - adv.mean())
        k = max(1, int(ratio * cov.numel()))
        top = torch.topk(cov, k + 1).values
        gaps.append(float(top[k - 1] - top[k]))
    return gaps


@pytest.mark.parametrize("micro_batches", [1, 2, 4])
def test_equals_verl_kl_cov_in_its_special_case(actor_config, engine_batch, engine_loss, micro_batches):
    """low_entropy_fraction=1, beta_low=0, beta_high=ppo_kl_coef, kl_target=old, unclipped base, micro-batch scope and
    the same covariance ratio reproduce verl's own `kl_cov` loss and gradient.

    Tie order: `kl_cov` takes `torch.topk(cov, k)` over float32 Cov, which promises nothing about which of equal
    values it returns (it differs between kernels and devices); SENT takes exactly k too, and of equal values the
    earlier token. The two sets can only differ when the k-th and (k+1)-th largest Cov tie, or lie within float32
    rounding of each other (SENT centres in float64). Continuous log-probs make this case tie-free, and the test
    checks that first, so the equivalence below is about the loss, not luck at a tie."""
    ratio, coef = 0.05, 0.7
    common = {"kl_loss_coef": 0.0, "use_kl_loss": False}
    kl_cov_cfg = actor_config(**common, **{"policy_loss.loss_mode": "kl_cov", "policy_loss.kl_cov_ratio": ratio,
                                           "policy_loss.ppo_kl_coef": coef})
    sent_cfg = actor_config(**common, **{
        "policy_loss.base_loss_mode": "unclipped", "policy_loss.low_entropy_fraction": 1.0,
        "policy_loss.high_cov_fraction": ratio, "policy_loss.beta_high": coef, "policy_loss.beta_low": 0.0,
        "policy_loss.kl_target": "old", "policy_loss.selection_scope": "micro_batch"})
    batch = engine_batch(PROMPTS, RESPONSES, off_policy=0.4)
    assert min(kl_cov_cut_gaps(batch, ratio, micro_batches)) > 1e-4  # no tie, nor a float32 near-tie, at the cut
    loss_ref, grad_ref, _ = engine_loss(partial(ppo_loss, config=kl_cov_cfg), batch, micro_batches=micro_batches)
    loss_ours, grad_ours, _ = engine_loss(partial(sent_actor_loss, config=sent_cfg), batch,
                                          micro_batches=micro_batches)
    assert loss_ours == pytest.approx(loss_ref, rel=1e-6)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-6, atol=1e-8)
    # and the penalty really acts (the equivalence is not two zero terms)
    _, grad_plain, _ = engine_loss(partial(sent_actor_loss, config=actor_config(**common, **{
        "policy_loss.base_loss_mode": "unclipped", "policy_loss.beta_high": 0.0, "policy_loss.beta_low": 0.0,
        "policy_loss.kl_target": "old", "policy_loss.selection_scope": "micro_batch"})), batch,
        micro_batches=micro_batches)
    assert not torch.allclose(grad_plain, grad_ref)


@pytest.mark.parametrize("tied_field", ["advantages", "entropy"])
def test_a_fully_tied_step_keeps_the_configured_fractions(actor_config, engine_batch, tied_field):
    """What a real run produced: every reward of a step equal (every advantage, so every Cov, is 0), or bf16
    entropies tied everywhere. The sets keep their exact sizes: T_high is k' tokens, not all of T_low (which gave 4x
    the penalty exactly when the policy gradient is 0), and T_low is k tokens, not every token."""
    fraction_low, fraction_high = 0.8, 0.05
    cfg = actor_config(**{"policy_loss.low_entropy_fraction": fraction_low,
                          "policy_loss.high_cov_fraction": fraction_high})
    batch = engine_batch(PROMPTS, RESPONSES, hole_every=5)
    constant = {"advantages": 0.0, "entropy": 0.25}[tied_field]
    batch.td[tied_field] = torch.nested.as_nested_tensor(
        [torch.full_like(t, constant) for t in batch.td[tied_field].unbind()], layout=torch.jagged)
    metrics = with_step_beta(batch, cfg.policy_loss)
    n = batch.num_valid_tokens()
    k = int(fraction_low * n)
    k_high = int(fraction_high * k)
    assert metrics["sent/low_entropy_frac"] == pytest.approx(k / n)
    assert metrics["sent/high_cov_frac"] == pytest.approx(k_high / k)
    beta = padded_beta(batch.td[BETA_FIELD])
    assert int((beta == cfg.policy_loss.beta_high).sum()) == k_high
    assert int((beta == cfg.policy_loss.beta_low).sum()) == k - k_high


def test_zero_betas_reduce_to_verl_ppo_loss(actor_config, engine_batch, engine_loss):
    """With beta_high = beta_low = 0 SENT is exactly verl's vanilla loss (+ uniform KL) through ppo_loss."""
    sent_cfg = actor_config(**{"kl_loss_coef": 0.001, "policy_loss.beta_high": 0.0, "policy_loss.beta_low": 0.0})
    vanilla_cfg = actor_config(**{"kl_loss_coef": 0.001, "policy_loss.loss_mode": "vanilla"})
    batch = engine_batch(PROMPTS, RESPONSES)
    with_step_beta(batch, sent_cfg.policy_loss)
    loss_a, grad_a, _ = engine_loss(partial(sent_actor_loss, config=sent_cfg), batch, micro_batches=2)
    loss_b, grad_b, _ = engine_loss(partial(ppo_loss, config=vanilla_cfg), batch, micro_batches=2)
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    torch.testing.assert_close(grad_a, grad_b)


def test_micro_batch_scope_prefers_current_policy_entropy(actor_config, engine_batch):
    """With actor.calculate_entropy the engine hands the current entropy in model_output; micro-batch selection uses it."""
    from verl.utils import tensordict_utils as tu

    cfg = actor_config(**{"policy_loss.selection_scope": "micro_batch", "policy_loss.low_entropy_fraction": 0.5,
                          "policy_loss.high_cov_fraction": 0.2})
    batch = engine_batch(PROMPTS[:2], RESPONSES[:2])
    data = batch.rows(range(2))
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=batch.num_valid_tokens(), global_batch_size=2)
    out = batch.model_output(range(2))
    _, m_old = sent_actor_loss(cfg, out, data)
    seq_values = torch.arange(sum(batch.seq_lens), dtype=torch.float32) % 3.0  # an unrelated entropy pattern
    out["entropy"] = torch.nested.nested_tensor_from_jagged(seq_values, offsets=out["log_probs"].offsets())
    _, m_new = sent_actor_loss(cfg, out, data)
    assert m_old["sent/entropy_cut"].aggregate() != m_new["sent/entropy_cut"].aggregate()


def _micro(batch, rows=range(2)):
    from verl.utils import tensordict_utils as tu

    data = batch.rows(rows)
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=batch.num_valid_tokens(rows), global_batch_size=len(rows))
    return data


def test_missing_ref_log_prob_is_named(actor_config, engine_batch):
    cfg = actor_config()
    batch = engine_batch(PROMPTS[:2], RESPONSES[:2])
    with_step_beta(batch, cfg.policy_loss)
    del batch.td["ref_log_prob"]
    with pytest.raises(KeyError, match="ref_log_prob"):
        sent_actor_loss(cfg, batch.model_output(range(2)), _micro(batch))


def test_missing_step_beta_is_named(actor_config, engine_batch):
    cfg = actor_config()
    batch = engine_batch(PROMPTS[:2], RESPONSES[:2])
    with pytest.raises(KeyError, match=BETA_FIELD):
        sent_actor_loss(cfg, batch.model_output(range(2)), _micro(batch))


@pytest.mark.parametrize("field", ["entropy", "old_log_probs", "advantages"])
def test_non_finite_step_fields_are_named(actor_config, engine_batch, field):
    cfg = actor_config()
    batch = engine_batch(PROMPTS[:2], RESPONSES[:2])
    rows = [t.clone() for t in batch.td[field].unbind()]
    rows[1][3] = float("nan")
    batch.td[field] = torch.nested.as_nested_tensor(rows, layout=torch.jagged)
    expected = {"old_log_probs": "log_prob"}.get(field, field)
    with pytest.raises(RuntimeError, match=expected):
        step_sent_beta(batch.td.select("response_mask", "entropy", "old_log_probs", "advantages"), cfg.policy_loss)


def test_missing_step_field_is_named(actor_config, engine_batch):
    batch = engine_batch(PROMPTS[:2], RESPONSES[:2])
    with pytest.raises(KeyError, match="entropy"):
        step_sent_beta(batch.td.select("response_mask", "old_log_probs", "advantages"), actor_config().policy_loss)


def test_non_finite_current_log_prob_is_named(actor_config, engine_batch):
    cfg = actor_config(**{"policy_loss.selection_scope": "micro_batch"})
    batch = engine_batch(PROMPTS[:2], RESPONSES[:2])
    out = batch.model_output(range(2))
    values = out["log_probs"].values().detach().clone()
    values[6] = float("nan")
    out["log_probs"] = torch.nested.nested_tensor_from_jagged(values, offsets=out["log_probs"].offsets())
    with pytest.raises(RuntimeError, match="log_prob"):
        sent_actor_loss(cfg, out, _micro(batch))


def test_sent_mode_under_plain_ppo_loss_explains_itself(actor_config, engine_batch):
    cfg = actor_config()
    batch = engine_batch(PROMPTS[:2], RESPONSES[:2])
    with pytest.raises(RuntimeError, match="recipe.sent.main_sent"):
        ppo_loss(cfg, batch.model_output(range(2)), _micro(batch))


@pytest.mark.parametrize("key,value,match", [
    ("kl_target", "reference", "kl_target"),
    ("selection_scope", "mini_batch", "selection_scope"),
    ("base_loss_mode", "sent", "base_loss_mode"),
    ("low_entropy_fraction", 1.5, "low_entropy_fraction"),
    ("beta_high", -0.1, "beta_high"),
])
def test_invalid_config_values_are_rejected(actor_config, key, value, match):
    with pytest.raises(Exception, match=match):
        actor_config(**{f"policy_loss.{key}": value})


def test_sent_term_math_never_reads_values_back():
    """SENT's per-micro-batch math (KL estimators, weighting, global-normalised aggregation, its metrics) on the meta
    device, where any host read raises: the loss adds no device-to-host sync of its own."""
    from verl.trainer.ppo.core_algos import agg_loss

    from recipe.sent.losses import _loss_metrics, _token_kl

    meta = torch.device("meta")
    log_prob, old, ref, beta = (torch.empty(4, 32, device=meta) for _ in range(4))
    mask = torch.empty(4, 32, dtype=torch.bool, device=meta)
    extra = {"ref_log_prob": ref}
    for target in ("ref", "old"):
        cfg = SentPolicyLossConfig(loss_mode="sent", kl_target=target)
        kl = _token_kl(log_prob, old, extra, cfg)
        for mode in ("token-mean", "seq-mean-token-mean"):
            term = agg_loss(loss_mat=beta * kl, loss_mask=mask, loss_agg_mode=mode, dp_size=2, batch_num_tokens=100,
                            global_batch_size=8)
            assert term.device == meta
        assert all(v.device == meta for v in _loss_metrics(beta, kl, log_prob, old, mask).values())


def test_token_set_metrics_split_the_step_into_penalised_and_free_tokens(actor_config, engine_batch):
    """`token_sets/*` (logged for every preset): the same selection as `step_sent_beta`; means and shares recomputed
    by hand from the padded step; the KL keys need the reference's log-probs; `applied` says whether the loss uses it."""
    from verl.trainer.ppo.core_algos import kl_penalty

    from recipe.sent.selection import STEP_FIELDS, token_set_metrics

    cfg = actor_config(**{"policy_loss.high_cov_fraction": 0.1})
    batch = engine_batch(PROMPTS, RESPONSES, hole_every=7)
    got = token_set_metrics(batch.td.select(*STEP_FIELDS, "ref_log_prob"), cfg.policy_loss, applied=False)
    beta, _ = step_sent_beta(batch.td.select(*STEP_FIELDS), cfg.policy_loss)
    padded = batch.td.select(*STEP_FIELDS, "ref_log_prob").to_padded_tensor()
    mask = padded["response_mask"] != 0
    penalised = (padded_beta(beta[BETA_FIELD]) > 0) & mask
    free = mask & ~penalised
    kl = kl_penalty(logprob=padded["old_log_probs"], ref_logprob=padded["ref_log_prob"], kl_penalty="low_var_kl")
    for name, value in (("entropy", padded["entropy"]), ("kl_ref", kl)):
        total = float((value * mask).sum())
        for set_name, members in (("penalised", penalised), ("free", free)):
            inside = float((value * members).sum())
            assert got[f"token_sets/{set_name}_{name}_mean"] == pytest.approx(inside / int(members.sum()), rel=1e-6)
            assert got[f"token_sets/{set_name}_{name}_share"] == pytest.approx(inside / total, rel=1e-6)
        assert got[f"token_sets/penalised_{name}_share"] + got[f"token_sets/free_{name}_share"] == pytest.approx(1.0)
    assert got["token_sets/free_frac"] == pytest.approx(int(free.sum()) / int(mask.sum()))
    assert 0 < got["token_sets/free_frac"] < 1 and got["token_sets/applied"] == 0.0
    # SENT leaves the high-entropy tokens free: they hold more than their share of the entropy
    assert got["token_sets/free_entropy_mean"] > got["token_sets/penalised_entropy_mean"]

    no_ref = token_set_metrics(batch.td.select(*STEP_FIELDS), cfg.policy_loss, applied=True)
    assert no_ref["token_sets/applied"] == 1.0 and not any("kl_ref" in key for key in no_ref)
    assert no_ref["token_sets/free_entropy_mean"] == got["token_sets/free_entropy_mean"]

