PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install demo test bench

install:
	$(PIP) install -q -e '.[test]'

demo: install
	synthgap demo

test: install
	$(PYTHON) -m pytest -q -n 2 --dist loadgroup

bench: install
	for b in bench/*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done
