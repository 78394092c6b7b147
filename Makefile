# DLA Workbench: `make run` starts the app on embedded defaults, `make test` runs lint and the full test suite.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint format bench clean system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	scripts/run.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The system packages come first (installed when root with apt-get, else a message naming them), then the venv
# and lint, then the services and the suite.
test:
	scripts/system-deps.sh
	$(MAKE) --no-print-directory lint
	scripts/test-services.sh
	$(VENV)/bin/python manage.py makemigrations --check --dry-run --settings dla_web.test_settings
	$(VENV)/bin/pytest

system-deps:
	scripts/system-deps.sh

bench: install
	for script in bench/bench_*.py; do \
	  if [ $$script = bench/bench_nnunet.py ] && ! $(PY) -c "import nnunetv2" 2>/dev/null; then \
	    echo "skipping $$script: nnU-Net is an optional extra (.venv/bin/pip install -e '.[bench]')"; continue; \
	  fi; \
	  $(PY) $$script || exit 1; \
	done

clean:
	rm -rf var/test test-artifacts
