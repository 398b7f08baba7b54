# The two commands of the README:
#   make run    install into .venv and serve on the embedded defaults (shipped model, SQLite file)
#   make test   install everything the tests need (Python packages, Prometheus) and run them
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SOURCES := pyproject.toml setup.py service/echogate/_repetition.c service/echogate/_corpus.c service/echogate/_text.c service/echogate/_explain.c $(wildcard proto/echogate/v1/*.proto)

.PHONY: run test install install-test system-deps bench clean

$(VENV)/.installed-run: $(SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(VENV)/.installed-run $@

install: $(VENV)/.installed-run
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/echogate serve

# Debian packages and services the tests use: a real Prometheus scrapes the server in
# tests/test_metrics.py; the store suite runs against the PostgreSQL server at 127.0.0.1:5432.
system-deps:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing prometheus (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@pg_isready -q -h 127.0.0.1 -p 5432 || { echo "starting PostgreSQL"; service postgresql start >/dev/null; \
	  for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; }

test: install-test system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: install-test
	$(BIN)/python bench/bench_gate.py

clean:
	rm -rf $(VENV) build service/*.egg-info service/echogate/v1/*_pb2*.py*
