# Two commands do everything (see README.md):
#   make run    - set up, then execute every notebook in $WORKBOOK_PROFILE and render the deliverables
#   make test   - set up, then run the pytest unit tests and nbval over every notebook (smoke profile)
#                 (TEST_WORKERS=N: unit tests in N processes, 2 by default)
#   make test-fast - the pure unit tests only (not those marked slow: notebooks, browser, training), under a minute
#   make lint   - ruff over the whole tree (configured in pyproject.toml)
#   make student - write the student edition to student/ (exercises stubbed, check cells added; see instructor/edition.py)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test nbval-smoke nbval-smoke-deepfloyd test-fast lint student benchmark clean-venv

setup: $(STAMP)

$(STAMP): environment.yml pyproject.toml tools/env_requirements.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) tools/env_requirements.py environment.yml > $(VENV)/requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(VENV)/requirements.txt
	touch $(STAMP)

run: setup
	$(PY) -m instructor render

# The tests train and sample tiny networks, which one CPU thread per process runs fastest: several threads
# cost more to start than the work, and a kernel, a sandbox and pytest sharing two cores oversubscribe them.
# The unit tests run in TEST_WORKERS processes (pytest-xdist), a test file per process at a time (its module
# fixtures built once); the two nbval runs (smoke; notebook 04 on the tiny DeepFloyd) use separate checkpoint
# folders and run side by side, each one's output printed whole when it ends.
TEST_WORKERS ?= 2
NBVAL := $(PY) -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider

# --output-sync (GNU make 4.0 or newer) keeps each run's output whole; an older make interleaves them.
OUTPUT_SYNC := $(if $(filter output-sync,$(.FEATURES)),--output-sync=target)

test nbval-smoke nbval-smoke-deepfloyd: export OMP_NUM_THREADS = 1
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile tests
	$(MAKE) --no-print-directory -j 2 $(OUTPUT_SYNC) nbval-smoke nbval-smoke-deepfloyd

nbval-smoke: setup
	WORKBOOK_PROFILE=smoke $(NBVAL) notebooks

nbval-smoke-deepfloyd: setup
	WORKBOOK_PROFILE=smoke-deepfloyd $(NBVAL) notebooks/04_diffusion_sampling_tricks.ipynb

test-fast: setup
	$(PY) -m pytest tests -m "not slow" -q

lint: setup
	$(PY) -m ruff check .

student: setup
	$(PY) -m instructor student --out student

benchmark: setup
	$(PY) benchmarks/train_throughput.py

clean-venv:
	rm -rf $(VENV)
