"""Imported by verl at `import verl` in every process of a `machine=cpu` run (`VERL_USE_EXTERNAL_MODULES`, set in
`configs/machine/cpu.yaml`): registers the CPU platform, makes it this process's verl platform, applies the verl
changes. Inert unless `SENT_CPU_LAYER=1`."""

from __future__ import annotations

import os


def activate() -> None:
    from verl.plugin.platform import get_platform, set_platform

    from recipe.cpu import patches
    from recipe.cpu.platform import PlatformCPU

    patches.apply_verl_changes()
    # VERL_PLATFORM=cpu picks it on first use; a process that resolved its platform already gets it replaced.
    if not isinstance(get_platform(), PlatformCPU):
        set_platform(PlatformCPU())


if os.environ.get("SENT_CPU_LAYER") == "1":
    activate()
