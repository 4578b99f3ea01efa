# leadhub — the two commands are `make demo` and `make test`; both set up what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup services stop-services test lint demo schemas-check bench clean browser

setup: $(STAMP)  ## create .venv with leadhub installed editable (+ dev tools)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

services: setup  ## start the local Kafka broker and PostgreSQL (idempotent)
	$(BIN)/leadhub services start

stop-services: setup
	$(BIN)/leadhub services stop

schemas-check: setup
	$(BIN)/leadhub schemas check

# The console's browser tests drive Debian's headless Chromium: install it when missing (root).
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver) >/dev/null; \
	  else echo "chromium missing: run 'apt-get install -y chromium chromium-driver' as root"; fi; }

test: setup services schemas-check browser  ## the whole suite against real Kafka and PostgreSQL
	CI=$${CI:-true} $(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy leadhub schemas producers processors consumers

demo: setup services  ## the hub running with a simulated LEAD site streaming through it
	$(BIN)/leadhub demo

bench: setup services
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/project.py
	$(BIN)/python bench/kafka_clients.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/projector_writes.py
	$(BIN)/python bench/sql_floor.py
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/state_memory.py
	$(BIN)/python bench/view_file.py
	$(BIN)/python bench/history.py

clean:
	rm -rf .leadhub build *.egg-info
