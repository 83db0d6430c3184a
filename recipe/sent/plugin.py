"""`verl.plugins` entry point: verl imports this at `import verl` in every process (driver, TaskRunner,
Ray workers on every node), so `loss_mode=sent` resolves wherever verl runs. Kept import-light: the
trainer registers itself from `recipe.sent.main_sent`'s TaskRunner instead."""

import recipe.sent.losses  # noqa: F401
