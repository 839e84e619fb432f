# Stable entry points (DESIGN.md): make demo, make test, make services, make services-down.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY_WORKER = $$(bin/venv worker)/bin/python
export PYTHONPATH := $(CURDIR)

help:
	@echo "make demo           the main job: checkpoint in -> version published (starts services)"
	@echo "make test           the test suite (real SeaweedFS, real Docker engine)"
	@echo "make test-fast      unit tests only (no services): the inner loop, about 3 minutes"
	@echo "make services       start SeaweedFS + Docker engine, write .run/services.env"
	@echo "make services-down  stop what make services started"
	@echo "make airflow        Airflow standalone on 127.0.0.1:8080 with the DAGs and services (prints login)"
	@echo "make compose-up     the compose stack with locally built images (docs/deploy.md);"
	@echo "                    CELERY=1: CeleryExecutor with Redis and a Celery worker"
	@echo "make compose-down   stop it and delete its volumes"
	@echo "make venvs          build both pinned venvs (cached outside the clone)"
	@echo "make bench          benchmarks (print ratios against a baseline run alongside)"
	@echo "make lock           re-resolve requirements*.in into the exact pins"

system-deps:
	@bin/system-deps

# Both venvs at once: pip spends much of its time waiting on downloads and single-threaded unpacking.
venvs: system-deps
	@bin/venv worker >/dev/null & w=$$!; bin/venv airflow >/dev/null || st=$$?; wait $$w || st=$$?; exit $${st:-0}

services: venvs
	@$(PY_WORKER) services.py up

airflow: services
	@$(PY_WORKER) demo/run_airflow.py

services-down:
	@$(PY_WORKER) services.py down

# The demo prints the time of each phase; the setup (packages, venvs, services) is timed here.
demo:
	@t0=$$(date +%s); $(MAKE) --no-print-directory services && \
	  source .run/services.env && TFS_DEMO_SETUP_SECONDS=$$(( $$(date +%s) - t0 )) $(PY_WORKER) demo/run_demo.py

# Three pytest-xdist workers: the Docker tests on one, every other file on either of the first two,
# then the end-to-end modules on all three (tests/scheduling.py). PYTEST_ARGS='-n 0': one process.
test: venvs
	@$(PY_WORKER) -m pytest -n 3 $(PYTEST_ARGS)

test-fast: venvs
	@$(PY_WORKER) -m pytest tests/unit -q $(PYTEST_ARGS)

bench: venvs
	@$(PY_WORKER) bench/transfer.py
	@$(PY_WORKER) bench/export.py
	@$(PY_WORKER) bench/validate.py
	@$(PY_WORKER) bench/pipeline.py
	@$(PY_WORKER) bench/dag_parse.py
	@$(PY_WORKER) bench/freshness.py
	@$(PY_WORKER) bench/watch_cost.py
	@$(PY_WORKER) bench/signing.py

lock:
	@for pair in "requirements-worker.in requirements-worker.txt" "requirements.in requirements.txt"; do \
	  set -- $$pair; d=$$(mktemp -d); python3 -m venv $$d && $$d/bin/pip install -q -U pip && \
	  $$d/bin/pip install -q -r $$1 && \
	  { head -2 $$2; $$d/bin/pip freeze --all | grep -vE '^(pip|setuptools|wheel)=='; } > $$2.new && \
	  mv $$2.new $$2; rm -rf $$d; done

.PHONY: help system-deps venvs services services-down airflow demo test test-fast bench lock

# The compose stack on this machine (images built locally: no registry needed; see docs/deploy.md).
compose-up: venvs
	@$(PY_WORKER) -m deploy.compose up $(if $(CELERY),--celery)

compose-down:
	@$(PY_WORKER) -m deploy.compose down

.PHONY: compose-up compose-down
