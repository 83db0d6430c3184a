"""An FSDP actor checkpoint as a Hugging Face folder at the precision it was trained in: verl's model merger without
its bf16 cast.

    python -m recipe.drivers.hf_merge --local_dir <ckpt>/global_step_N/actor --target_dir <dir>

verl 0.9.1's FSDP merger (`python -m verl.model_merger merge --backend fsdp`) casts every shard to bf16
(`verl/model_merger/fsdp_model_merger.py`, `_load_and_merge_state_dicts`) and writes bf16 weights whatever the
checkpoint holds: a model trained in fp32 (the CPU runs) or with fp32 master weights (verl's GPU default) would be
evaluated rounded, not as trained (docs/evaluation.md, "The merged model is the trained model"). This subclass
concatenates the same shards by the same placements (verl's `_merge_by_placement`) in their own dtype and saves
through verl's own `save_hf_model_and_tokenizer` (tied keys dropped, tokenizer, output validation).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor
from verl.model_merger.base_model_merger import ModelMergerConfig
from verl.model_merger.fsdp_model_merger import FSDPModelMerger, merge_non_dtensor_shards


class KeepDtypeFSDPMerger(FSDPModelMerger):
    """verl's FSDP merger, the shards kept in the dtype they were saved in."""

    def _load_and_merge_state_dicts(self, world_size, total_shards, mesh_shape, mesh_dim_names):
        if len(mesh_shape) != 1:
            raise NotImplementedError("FSDP + TP is not supported (nor by verl's merger)")
        shards = [torch.load(Path(self.config.local_dir) / f"model_world_size_{world_size}_rank_{rank}.pt",
                             map_location="cpu", weights_only=False) for rank in range(total_shards)]
        merged = {}
        for key in shards[0]:
            parts = [shard[key] for shard in shards]
            if isinstance(parts[0], DTensor):
                placements = tuple(parts[0].placements)
                if mesh_dim_names[0] in ("dp", "ddp"):  # replicated over the data-parallel dimension
                    placements = placements[1:]
                merged[key] = self._merge_by_placement([part._local_tensor for part in parts], placements[0])
            else:
                merged[key] = merge_non_dtensor_shards(key, parts)
        return merged

    def save_hf_model_and_tokenizer(self, state_dict):
        dtypes = {tensor.dtype for tensor in state_dict.values() if tensor.is_floating_point()}
        super().save_hf_model_and_tokenizer(state_dict)
        if len(dtypes) == 1:
            # verl builds the saved model's config in bf16; name the weights' dtype, which `dtype="auto"` loaders read
            path = Path(self.config.target_dir) / "config.json"
            config = json.loads(path.read_text())
            for key in [key for key in ("dtype", "torch_dtype") if key in config] or ["dtype"]:
                config[key] = str(next(iter(dtypes))).removeprefix("torch.")
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def merge(local_dir: Path, target_dir: Path) -> Path:
    """Merge the actor checkpoint `local_dir` (`.../global_step_N/actor`) into the Hugging Face folder `target_dir`."""
    local_dir, target_dir = Path(local_dir), Path(target_dir)
    if not (local_dir / "fsdp_config.json").is_file():
        raise FileNotFoundError(f"not an FSDP actor checkpoint (no fsdp_config.json): {local_dir}")
    target_dir.mkdir(parents=True, exist_ok=True)
    config = ModelMergerConfig(operation="merge", backend="fsdp", local_dir=str(local_dir),
                               target_dir=str(target_dir), hf_model_config_path=str(local_dir / "huggingface"))
    merger = KeepDtypeFSDPMerger(config)
    merger.merge_and_save()
    merger.cleanup()
    return target_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local_dir", type=Path, required=True,
                        help="the actor checkpoint: <ckpt>/global_step_N/actor")
    parser.add_argument("--target_dir", type=Path, required=True, help="the Hugging Face folder to write")
    args = parser.parse_args(argv)
    try:
        merge(args.local_dir, args.target_dir)
    except FileNotFoundError as error:
        print(f"hf_merge: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
