# Everything a fresh machine needs (Python 3.11, no GPU, the package registries) is done by these targets.
#   make run         set up, then run the course's main job headless: the Hemingway style lab (outputs/hemingway_lab/)
#   make test        set up, then run the whole test suite (unit tests + every notebook, offline, on the CPU)
#   make course      set up, then execute every notebook headless into outputs/
#   make lab         set up, then open the course in JupyterLab
#   make benchmark   set up, then time every notebook and record peak memory (benchmarks/results/)
#   make gpu-check   set up, then run every notebook offline on a CUDA GPU with the bundled model, timed (benchmarks/results/)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Notebook 06's local runtime (gguf, llama-cpp-python), kept out of `make run` and `make lab`: PyPI has llama-cpp-python
# as source only, so installing it compiles llama.cpp once (portable: GGML_NATIVE=OFF; pip's wheel cache keeps it).
LOCAL_RUNTIME := $(VENV)/.local-runtime
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF

.PHONY: setup run course test lab benchmark gpu-check clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

$(LOCAL_RUNTIME): $(STAMP) requirements-local-runtime.txt
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet -r requirements-local-runtime.txt
	touch $(LOCAL_RUNTIME)

run: setup
	mkdir -p outputs
	cd notebooks && ../$(VENV)/bin/papermill 07_hemingway_style_lab.ipynb ../outputs/07_hemingway_style_lab.ipynb \
		-p OUTPUT_DIR outputs/hemingway_lab
	@echo "Done: open outputs/hemingway_lab/compare.html"

course: setup $(LOCAL_RUNTIME)
	mkdir -p outputs
	for notebook in notebooks/*.ipynb; do \
		$(VENV)/bin/papermill --cwd notebooks "$$notebook" "outputs/$$(basename $$notebook)" || exit 1; \
	done

test: setup $(LOCAL_RUNTIME)
	PYTHONDONTWRITEBYTECODE=1 $(PY) -m pytest

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

benchmark: setup $(LOCAL_RUNTIME)
	$(PY) benchmarks/run_notebooks.py

gpu-check: setup $(LOCAL_RUNTIME)
	$(PY) -m course_utils.gpu_check

clean:
	rm -rf $(VENV) outputs
