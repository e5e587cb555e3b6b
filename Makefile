# udrbd: `make demo` runs the two-node demo, `make test` the test suite (both set up first).
PY := .venv/bin/python

.PHONY: setup test unit integration demo bench install-service clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest tests

unit: setup
	$(PY) -m pytest tests/unit

integration: setup
	$(PY) -m pytest tests/integration

demo: setup
	@bash scripts/demo.sh

bench: setup
	$(PY) -m bench
	$(PY) -m bench.resync
	$(PY) -m bench.floor

install-service: setup
	@bash scripts/install-service.sh "$(CURDIR)"

clean:
	rm -rf .venv build *.egg-info .pytest_cache
