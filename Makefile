# The two entry points of the README. Both set up .venv/ first (idempotent).
PY := .venv/bin/python

.PHONY: setup test demo clean-demo

setup:
	@bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests -q

# QAT=1 adds quantization-aware training (about 10 more minutes)
demo: setup
	$(PY) tools/demo.py --work-dir work_dirs/demo --data-root data/synthetic $(if $(QAT),--qat)

clean-demo:
	rm -rf work_dirs/demo
