# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Wheels of the runtime dependencies, for the packaging test's fresh venv (it installs offline from here).
WHEELHOUSE := $(VENV)/wheelhouse
# The Ray extra (placement "ray") is installed for the tests; when the registry cannot provide it, this file says why
# and the Ray tests skip with that reason (tests/raykit.py).
RAY_MISSING := $(VENV)/.ray-unavailable
RUNTIME_DEPS := pykka|msgspec|apsw|structlog|prometheus.client|rich|markdown.it.py|mdurl|pygments

.PHONY: demo test lint bench clean codex browser mutation

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet -e '.[test,ray]' > $(VENV)/ray-install.log 2>&1 && rm -f $(RAY_MISSING) \
		|| { tail -n 3 $(VENV)/ray-install.log > $(RAY_MISSING); echo "agenthost[ray] not installed: Ray tests will skip" >&2; }
	$(BIN)/python -m pip wheel --quiet --no-deps -w $(WHEELHOUSE) \
		$$($(BIN)/python -m pip freeze --exclude-editable | grep -iE '^($(RUNTIME_DEPS))==')
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/agenthost demo

# The real codex (npm @openai/codex@0.169.0) goes to a cache folder outside the repo; when the npm registry cannot
# be reached this prints why and the codex tests skip, while everything else still runs.
codex:
	@bash .ci/install-codex > /dev/null

# Headless Chromium for the status page's browser tests (tests/test_http_browser.py): Debian's chromium and
# chromium-driver, through apt when it is there and we may use it (root, or sudo without a password). Otherwise this
# says why and those tests skip; nothing else depends on it.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "make: no apt-get: the browser tests will skip"; \
	else \
		if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi; \
		if [ "$$sudo" = none ]; then echo "make: apt-get needs root: the browser tests will skip"; \
		else $$sudo apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
			|| { $$sudo apt-get update -qq >/dev/null 2>&1 \
				&& $$sudo apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; } \
			|| echo "make: apt-get could not install chromium: the browser tests will skip"; fi; \
	fi

# ruff (lint + format check) and mypy (strict for the public API; see pyproject.toml).
lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	bash .ci/typecheck $(BIN)/python

test: $(STAMP) codex browser lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

# Mutation testing (cosmic-ray) of mutation/modules.txt, in throwaway copies with their own venvs (never this tree or
# .venv); see .ci/mutation and mutation/README.md. About 45 minutes on 2 cores for every module; not part of `test`.
# Example: make mutation MODULES=recovery,database MUTATION_ARGS="--limit 50"
mutation:
	PYTHON=$(PYTHON) bash .ci/mutation $(if $(MODULES),--modules $(MODULES)) $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
