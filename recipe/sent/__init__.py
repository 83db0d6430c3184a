"""SENT wired into verl 0.9.1: loss config, actor loss, trainer, entry point.

Importing this package registers nothing by itself; `recipe.sent.config` (the `policy_loss._target_`) and
`recipe.sent.plugin` (the `verl.plugins` entry point) register the policy losses, `recipe.sent.trainer` the
trainer.
"""
