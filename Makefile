# Two commands set up a fresh machine: `make demo` runs the platform end to end, `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= synthetic:shop-small

.PHONY: install servers demo test lint compose-config clean

$(STAMP): pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # the CPU wheel first, so nothing resolves a CUDA build
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

servers:  # redis-server and PostgreSQL for the tests that start them (apt, only when missing)
	bash .ci/install-servers.sh

demo: install
	$(VENV)/bin/twotower demo --data $(DATA)

test: install servers  # two workers: 10 min against 15 in one on the 2-core reference machine
	$(PY) -m pytest -n 2

compose-config: install  # docker-compose.yml has its services, ports, volumes, health checks
	$(PY) .ci/compose_check.py docker-compose.yml .env.example
	@echo "docker-compose.yml: ok"

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .twotower
