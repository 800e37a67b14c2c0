# The two commands of the README: `make run` and `make test`.
SHELL := /bin/bash
# Where `make run` keeps its node; override with `make run MAILYARD_HOME=/srv/mail`.
MAILYARD_HOME ?= $(if $(filter 0,$(shell id -u)),/var/lib/mailyard,$(HOME)/.mailyard)
PORT_BASE ?= 0

.PHONY: run test lint

run:
	@scripts/setup.sh run
	@if [ "$$(id -u)" = 0 ]; then .venv/bin/mailyard install-commands; fi
	@.venv/bin/mailyard --home "$(MAILYARD_HOME)" run --port-base "$(PORT_BASE)"

test:
	@scripts/setup.sh test
	@.venv/bin/python -m pytest $(PYTEST_ARGS)

lint:
	@scripts/setup.sh test
	@.venv/bin/ruff check src tests bench
	@.venv/bin/mypy
