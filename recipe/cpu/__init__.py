"""verl 0.9.1's training loop on a CPU-only machine (verl has no CPU path), selected by `machine=cpu`.

`configs/machine/cpu.yaml` is the one switch: it sets the configuration a CPU run needs and the environment it needs
(`ray_kwargs.ray_init.runtime_env.env_vars`, the only place that environment is written), which Ray hands every
worker and the vLLM processes those workers start; the driver (`recipe.sent.main_sent`) exports it to itself. With those variables:

- `import verl` imports `recipe.cpu.verl_plugin` (verl's `VERL_USE_EXTERNAL_MODULES`), which registers the CPU platform
  with verl's `PlatformRegistry` (`recipe.cpu.platform`) and applies the verl changes of `recipe.cpu.patches`;
- vLLM calls `recipe.cpu.vllm_plugin:register` in each of its own processes (the `vllm.general_plugins` entry point),
  which applies the vLLM change; without `SENT_CPU_LAYER=1` it does nothing.

Nothing here runs, and nothing is registered or patched, unless `machine=cpu` was chosen. Every change names the
verl / vLLM version and line it targets and checks that the target still looks that way before touching it.
"""
