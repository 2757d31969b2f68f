# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[run,dev]'
	touch $(STAMP)

install: $(STAMP)

# A prediction (the paper's question), then a real 4-process all-reduce of every plan, checked exactly.
demo: install
	$(VENV)/bin/firesim predict --model googlenet --hardware titan --gpus 1,32,128 --algo tree,ps,ring --batch 1024 --epochs 72
	$(VENV)/bin/firerun run --nproc 4 bench --sizes 1MiB:16MiB --factor 4 --algo ring,tree,ps,builtin --iters 5 --warmup 2

# pytest exits 5 when it collected nothing: that is not a failure of the project.
test: install
	$(PY) -m pytest -q --nbmake tests notebooks; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

bench: install
	$(PY) -m bench

lint: install
	$(VENV)/bin/ruff check firesim firerun models tests bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
