"""verl 0.9.1's training loop on a CPU-only machine (verl has no CPU path), selected by `machine=cpu`.

`configs/machine/cpu.yaml` is the one switch: it sets the configuration a CPU run needs and puts `ENV` (below) into
Ray's runtime environment, so every Ray worker, and the vLLM engine processes those workers start, sees it. The
driver (`recipe.sent.main_sent`) exports the same variables into its own process. With those variables:

- `import verl` imports `recipe.cpu.verl_plugin` (verl's `VERL_USE_EXTERNAL_MODULES`), which registers the CPU platform
  with verl's `PlatformRegistry` (`recipe.cpu.platform`) and applies the verl changes of `recipe.cpu.patches`;
- vLLM calls `recipe.cpu.vllm_plugin:register` in each of its own processes (the `vllm.general_plugins` entry point),
  which applies the vLLM change; without `SENT_CPU_LAYER=1` it does nothing.

Nothing here runs, and nothing is registered or patched, unless `machine=cpu` was chosen. Every change names the
verl / vLLM version and line it targets and checks that the target still looks that way before touching it.
"""

# What `machine=cpu` puts into every process (configs/machine/cpu.yaml repeats these under ray_init.runtime_env).
ENV = {
    "SENT_CPU_LAYER": "1",  # turns on the vLLM plugin (it is loaded in every vLLM process, selected or not)
    "VERL_PLATFORM": "cpu",  # verl's platform choice: the one registered by recipe.cpu.platform
    "VERL_USE_EXTERNAL_MODULES": "recipe.cpu.verl_plugin",  # imported at `import verl` in every process
    "VERL_ENGINE_DEVICE": "cuda",  # verl's engine lookup override: the FSDP engines, registered for cuda/npu only
}
