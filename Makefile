# One command per job on a fresh Debian machine with only Python 3.10+.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 resolves to a CPU wheel here; elsewhere pip picks the matching build.
TORCH ?= torch==2.13.0

SAMPLE := asr_stream/assets/sample.wav

.PHONY: install test test-all demo clean

$(BIN)/asr-stream: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/asr-stream

# Transcribe the bundled sample with the bundled model, printing words as they are emitted.
demo: install
	$(BIN)/asr-stream transcribe $(SAMPLE) --realtime

test: install
	$(BIN)/pytest -q

test-all: install
	$(BIN)/pytest -q -m ""

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
