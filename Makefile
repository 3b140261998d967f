# budgateway: `make run` serves the bundled config, `make test` runs the whole suite.
# Each target works on a fresh Debian machine that has only python3.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= conf/tensorzero.toml
# Debian packages the test suite starts real servers from.
TEST_DEBS := redis-server clickhouse-server
TEST_BINS := redis-server clickhouse-server

.PHONY: install run test lint bench bench-deps clean test-deps

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 && $(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	  else echo "make: python3 cannot create a virtualenv: install the python3-venv package" >&2; exit 1; fi; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

run: $(STAMP)
	$(BIN)/budgateway --config-file $(CONFIG)

test-deps:
	@missing=""; \
	for b in $(TEST_BINS); do PATH="$$PATH:/usr/sbin" command -v $$b >/dev/null 2>&1 || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make: installing $(TEST_DEBS)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_DEBS) >/dev/null; \
	  else \
	    echo "make: the tests need the Debian packages $(TEST_DEBS); run: sudo apt-get install -y $(TEST_DEBS)" >&2; \
	    exit 1; \
	  fi; \
	fi

test: $(STAMP) test-deps
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check gateway providers test bench

# The load tools and mock come from Debian; matplotlib (the chart) and py-spy are the bench extra.
# wrk2 (fixed rates) is built from ../shared/tools/wrk2 when that folder exists, else hey paces them.
BENCH_DEBS := nginx wrk hey redis-server libssl-dev zlib1g-dev
BENCH_BINS := nginx wrk hey redis-server
BENCH_STAMP := $(VENV)/.bench-installed
WRK2_SRC := ../shared/tools/wrk2
WRK2 := $(BIN)/wrk2

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'
	@touch $@

bench-deps:
	@missing=""; \
	for b in $(BENCH_BINS); do PATH="$$PATH:/usr/sbin" command -v $$b >/dev/null 2>&1 || missing=1; done; \
	[ -f /usr/include/openssl/ssl.h ] && [ -f /usr/include/zlib.h ] || missing=1; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make: installing $(BENCH_DEBS)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_DEBS) >/dev/null; \
	  else \
	    echo "make: the benchmark needs the Debian packages $(BENCH_DEBS): sudo apt-get install -y $(BENCH_DEBS)" >&2; \
	    exit 1; \
	  fi; \
	fi

# A copy is built under the venv: ../shared may be read-only, and nothing else may need it.
$(WRK2): | bench-deps
	@if [ -d $(WRK2_SRC) ]; then \
	  echo "make: building wrk2 from $(WRK2_SRC)"; \
	  rm -rf $(VENV)/wrk2-build && cp -r $(WRK2_SRC) $(VENV)/wrk2-build && \
	  $(MAKE) -s -C $(VENV)/wrk2-build >$(VENV)/wrk2-build.log 2>&1 && cp $(VENV)/wrk2-build/wrk $@ && \
	  rm -rf $(VENV)/wrk2-build; \
	else echo "make: no $(WRK2_SRC): fixed rates are paced by hey instead of wrk2"; fi

bench: $(BENCH_STAMP) bench-deps $(WRK2)
	PATH="$$PATH:/usr/sbin" $(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/pytest -q -s -m measurement -p no:cacheprovider test/integration/redis/test_load_cost.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
