"""CurriculumRLDataset through verl's own create_rl_dataset + create_rl_sampler + StatefulDataLoader + collate_fn."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
N_TRAIN = 20


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    texts = [f"What is {a}+{b}?" for a in range(20) for b in range(20)]
    core.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tok


def _rows(n, scored, offset=0):
    rows = []
    for i in range(n):
        ei = {"split": "train", "index": offset + i}
        if scored:
            ei["semantic_entropy"] = float((i * 7) % n) / n * 2.0  # a permutation of distinct scores
        rows.append(
            {
                "data_source": "math_dapo",
                "prompt": [{"role": "user", "content": f"What is {i}+1?"}],
                "ability": "MATH",
                "reward_model": {"style": "rule", "ground_truth": str(i + 1)},
                "extra_info": ei,
            }
        )
    return rows


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cur")
    train, val, raw = d / "train.parquet", d / "val.parquet", d / "raw.parquet"
    pd.DataFrame(_rows(N_TRAIN, True)).to_parquet(train)
    pd.DataFrame(_rows(6, False, offset=1000)).to_parquet(val)
    pd.DataFrame(_rows(8, False)).to_parquet(raw)
    return {"train": str(train), "val": str(val), "raw": str(raw)}


def _data_config(files, **curriculum):
    """verl's data defaults + the data block of configs/sent_trainer.yaml (the recipe's wiring) + test overrides."""
    import verl

    base = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/data/legacy_data.yaml")
    ours = OmegaConf.load(REPO / "configs/sent_trainer.yaml").data
    cfg = OmegaConf.merge(base, ours)
    cfg.train_files = [files["train"]]
    cfg.val_files = [files["val"]]
    cfg.dataloader_num_workers = 0
    cfg.train_batch_size = 4
    for k, v in curriculum.items():
        OmegaConf.update(cfg, f"curriculum.{k}", v, force_add=True)
    return cfg


def _loader(ds, cfg):
    from torchdata.stateful_dataloader import StatefulDataLoader
    from verl.trainer.ppo.utils import create_rl_sampler
    from verl.utils.dataset.rl_dataset import collate_fn

    return StatefulDataLoader(
        ds, batch_size=4, num_workers=0, drop_last=True, collate_fn=collate_fn, sampler=create_rl_sampler(cfg, ds)
    )


def _make(files, paths, tokenizer, **curriculum):
    from verl.trainer.ppo.utils import create_rl_dataset

    cfg = _data_config(files, **curriculum)
    return create_rl_dataset(paths, cfg, tokenizer, None), cfg


def _indices(batch):
    return [int(ei["index"]) for ei in batch["extra_info"]]


def test_recipe_config_selects_the_dataset():
    cfg = OmegaConf.load(REPO / "configs/sent_trainer.yaml")
    assert cfg.data.shuffle is False
    assert cfg.data.custom_cls.path == "pkg://recipe.sent.curriculum_dataset"
    assert cfg.data.custom_cls.name == "CurriculumRLDataset"


def test_plan_served_in_one_run_with_resume(files, tokenizer):
    from recipe.sent.curriculum_dataset import CurriculumRLDataset, curriculum_step_metrics
    from verl_ext.curriculum import plan_curriculum

    ds, cfg = _make(files, [files["train"]], tokenizer, epochs_per_stage=2)
    assert isinstance(ds, CurriculumRLDataset) and ds.curriculum_active
    scores = [r["extra_info"]["semantic_entropy"] for r in _rows(N_TRAIN, True)]
    plan = plan_curriculum(scores, num_stages=2, epochs_per_stage=2, seed=0)
    assert len(ds) == 2 * N_TRAIN
    assert [ds[i]["extra_info"]["index"] for i in range(len(ds))] == plan

    batches = list(_loader(ds, cfg))
    assert len(batches) == 2 * N_TRAIN // 4
    served = [i for b in batches for i in _indices(b)]
    assert served == plan
    stages = [int(s) for b in batches for s in b["curriculum_stage"]]
    assert stages == sorted(stages) and set(stages) == {1, 2}
    assert stages.count(1) == stages.count(2) == N_TRAIN  # 10 prompts per stage x 2 epochs
    # verl's usual batch keys are all there
    for key in ("raw_prompt", "data_source", "reward_model", "extra_info", "index", "dummy_tensor", "tools_kwargs"):
        assert key in batches[0]

    # step metrics from a batch, as the trainer computes them
    b = batches[-1]
    m = curriculum_step_metrics(b["curriculum_stage"], [ei.get("semantic_entropy") for ei in b["extra_info"]])
    assert m["curriculum/stage"] == 2.0
    assert m["curriculum/mean_se"] == pytest.approx(sum(scores[i] for i in _indices(b)) / 4)

    # save the loader state mid-stage-1 (after 3 of 5 stage-1 batches), restore into a fresh dataset + loader
    it_loader = _loader(ds, cfg)
    it = iter(it_loader)
    for _ in range(3):
        next(it)
    state = it_loader.state_dict()
    ds2, cfg2 = _make(files, [files["train"]], tokenizer, epochs_per_stage=2)
    resumed = _loader(ds2, cfg2)
    resumed.load_state_dict(state)
    rest = [i for b in resumed for i in _indices(b)]
    assert rest == served[12:]


def test_validation_set_untouched(files, tokenizer):
    val, _ = _make(files, [files["val"]], tokenizer)
    assert not val.curriculum_active
    assert [val[i]["extra_info"]["index"] for i in range(len(val))] == list(range(1000, 1006))
    assert "curriculum_stage" not in val[0]


def test_unscored_training_data(files, tokenizer, caplog):
    from recipe.sent.curriculum_dataset import CurriculumDataError

    f2 = dict(files, train=files["raw"])
    with pytest.raises(CurriculumDataError, match=r"raw\.parquet.*semantic_entropy"):
        _make(f2, [files["raw"]], tokenizer, enable=True)
    with caplog.at_level(logging.WARNING):
        ds, _ = _make(f2, [files["raw"]], tokenizer)  # enable: auto (the recipe default) -> file order + warning
    assert not ds.curriculum_active
    assert "unscored" in caplog.text
    assert [ds[i]["extra_info"]["index"] for i in range(len(ds))] == list(range(8))


def test_disabled_and_boundaries(files, tokenizer):
    ds, _ = _make(files, [files["train"]], tokenizer, enable=False)
    assert not ds.curriculum_active and len(ds) == N_TRAIN
    ds, _ = _make(files, [files["train"]], tokenizer, stage_boundaries=[0.5], shuffle_within_stage=False)
    se = [ds[i]["extra_info"]["semantic_entropy"] for i in range(len(ds))]
    assert se == sorted(se)
    assert [ds[i]["curriculum_stage"] for i in range(len(ds))] == [1 if s <= 0.5 else 2 for s in se]


def test_step_metrics_edge_cases():
    from recipe.sent.curriculum_dataset import curriculum_step_metrics

    assert curriculum_step_metrics(None, None) == {}
    assert curriculum_step_metrics([1, 1, 2], [0.5, None, float("nan")]) == {"curriculum/stage": 2.0, "curriculum/mean_se": 0.5}


def test_trainer_reads_curriculum_metrics_from_the_prompt_batch(files, tokenizer):
    """SentSyncTrainer logs curriculum/stage and the step's mean SE from the prompt batch exactly as verl's V1
    trainer builds it (`_fetch_one_gen_batch`: collate_fn output + uid -> `tu.get_tensordict`)."""
    import numpy as np
    from verl.utils import tensordict_utils as tu

    from recipe.sent.trainer import prompt_batch_curriculum_metrics

    ds, cfg = _make(files, [files["train"]], tokenizer)
    scores = [r["extra_info"]["semantic_entropy"] for r in _rows(N_TRAIN, True)]
    batches = list(_loader(ds, cfg))
    for batch_dict, want_stage in ((batches[0], 1.0), (batches[-1], 2.0)):
        batch_dict["uid"] = np.array([str(i) for i in range(len(batch_dict["raw_prompt"]))], dtype=object)
        metrics = prompt_batch_curriculum_metrics(tu.get_tensordict(batch_dict))
        assert metrics["curriculum/stage"] == want_stage
        assert metrics["curriculum/mean_se"] == pytest.approx(sum(scores[i] for i in _indices(batch_dict)) / 4)

    plain, _ = _make(files, [files["raw"]], tokenizer, enable=False)  # unscored data, curriculum off
    batch_dict = next(iter(_loader(plain, cfg)))
    assert prompt_batch_curriculum_metrics(tu.get_tensordict(batch_dict)) == {}
