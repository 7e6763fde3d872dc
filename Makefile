.PHONY: setup demo test lint bench
setup:
	bash scripts/setup.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
bench:
	bash scripts/bench.sh
