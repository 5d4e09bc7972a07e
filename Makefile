# The README's two commands: `make demo` and `make test`. Both run setup first (idempotent).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test unit bench kafka-up kafka-down

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m services.demo

test: setup
	$(PY) -m mypy kstreamlet
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -q tests/unit

bench: setup
	$(PY) -m bench all

kafka-up: setup
	.venv/bin/kstreamlet dev kafka up

kafka-down:
	.venv/bin/kstreamlet dev kafka down
