# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench validate lint clean

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

# Predicted vs measured on emulated clusters (root): every example topology x shaper x backend x algorithm x
# size, 5 measured runs each. Regenerates docs/validation.md (its generated blocks), its figures and
# docs/validation.json. Prints its estimated run time first (~40 min on 2 cores); needs a quiet machine.
# Not part of `make test`, which runs a small emulated validation.
VALIDATE_ALGOS ?= ring,tree,ps,ps:servers=2,ps:servers=1,colocated=false,halving_doubling,double_binary_tree,hierarchical:ranks_per_node=2
validate: install
	$(VENV)/bin/firerun validate --suite examples/topologies --shaper htb,tbf --backend torch,mpi \
		--algo '$(VALIDATE_ALGOS)' --size 1MiB,4MiB,16MiB --repeat 5 --out docs

lint: install
	$(VENV)/bin/ruff check firesim firerun models tests bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
