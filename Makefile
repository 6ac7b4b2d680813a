# The two entry points of the README. Both set up .venv/ first (idempotent).
PY := .venv/bin/python

.PHONY: setup test demo clean-demo

setup:
	@bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests -q

demo: setup
	$(PY) tools/demo.py --work-dir work_dirs/demo --data-root data/synthetic

clean-demo:
	rm -rf work_dirs/demo
