"""verl_ext/host_syncs.py's reading of torch's messages (the sync checks themselves need a CUDA device: gpu_check).
The texts are torch's own: c10/cuda's for a sync in "warn" / "error" mode, and the one-time warning
set_sync_debug_mode gives when it is first switched on (seen on an H200, docs/gpu-check/h200.log), which once
counted as a sync of whatever ran first."""

from __future__ import annotations

import pytest

from verl_ext.host_syncs import is_sync_message


@pytest.mark.parametrize(("text", "is_sync"), [
    ("called a synchronizing CUDA operation", True),  # TORCH_WARN in "warn" mode
    ("called a synchronizing CUDA operation\nException raised from warn_or_error_on_sync at ...", True),  # "error"
    ("Synchronization debug mode is a prototype feature and does not yet detect all synchronizing operations "
     "(Triggered internally at /pytorch/torch/csrc/cuda/Module.cpp:1003.)", False),
    ("CUDA error: an illegal memory access was encountered", False),
])
def test_only_torchs_sync_report_counts_as_a_sync(text, is_sync):
    assert is_sync_message(text) is is_sync
