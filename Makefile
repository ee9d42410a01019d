# The two commands of the README: `make demo` and `make test`.
# Both create .venv on first use and install the pinned requirements into it.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean-demo

# Reinstall only when the requirements change.
$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

# Every stage on the synthetic corpus; a second run reuses what is done.
demo: $(STAMP)
	$(PY) -m demo --out demo_data

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-demo:
	rm -rf demo_data logs/demo logs/demo_distillation
