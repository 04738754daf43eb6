# DripDrop for Kafka — developer entry points. Fresh machine: `make demo`, `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: help venv services services-down services-status topics migrate lint test test-long test-unit demo bench chaos fuzz clean

help:
	@echo "make demo            set everything up, run the demo scenario through the real pipeline"
	@echo "make test            set everything up, run lint, types and the whole test suite"
	@echo "make test-long       the long tests make test leaves out: full fault chaos, every crash point"
	@echo "make test-unit       unit tiers only (no services needed)"
	@echo "make services        start Kafka (KRaft, :19092) and PostgreSQL (:15432) if not running"
	@echo "make services-down   stop exactly what 'make services' started"
	@echo "make bench           benchmarks (results: docs/benchmarks.md)"
	@echo "make fuzz            fuzz every input topic with 100,000 records each (short mode: make test)"
	@echo "make chaos           full chaos run: 2 workers, 10,000 x 3 steps, 100 SIGKILLs (docs/reliability.md)"

$(VENV_STAMP): pyproject.toml
	@test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[dev]'
	@touch $(VENV_STAMP)

venv: $(VENV_STAMP)

services: venv
	$(PY) infra/services.py up

services-down:
	@if [ -x $(PY) ]; then $(PY) infra/services.py down; else python3 infra/services.py down; fi

services-status:
	$(PY) infra/services.py status

migrate: services
	.venv/bin/alembic upgrade head

lint: venv
	.venv/bin/ruff check dripdrop_core streams tests infra benchmarks
	.venv/bin/ruff format --check dripdrop_core streams tests infra benchmarks
	.venv/bin/mypy dripdrop_core streams infra benchmarks tests

# pytest exits 5 when it collected no test: that is a failure here too, said plainly.
test: venv services migrate lint
	DRIPDROP_REQUIRE_SERVICES=1 .venv/bin/pytest -p no:cacheprovider -m "not long" \
		--durations=40 --cov=dripdrop_core --cov-report=term --cov-fail-under=95 tests; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$rc

# Tests marked long (minutes each): the chaos run with every fault, the crash-point matrix.
test-long: venv services migrate
	DRIPDROP_REQUIRE_SERVICES=1 .venv/bin/pytest -p no:cacheprovider -m long --durations=20 tests

test-unit: venv
	.venv/bin/pytest -m "not integration" tests/unit tests/agents

demo: venv services migrate
	$(PY) -m streams.demo

bench: venv services migrate
	$(PY) -m benchmarks.run

fuzz: venv services migrate
	DRIPDROP_REQUIRE_SERVICES=1 DRIPDROP_FUZZ_RECORDS=400000 .venv/bin/pytest -p no:cacheprovider \
		-s tests/integration/test_fuzz_inputs.py

chaos: venv services migrate
	$(PY) -m tests.chaos.harness $(CHAOS_ARGS)

clean: services-down
	rm -rf .dripdrop .venv .pytest_cache .mypy_cache .ruff_cache
