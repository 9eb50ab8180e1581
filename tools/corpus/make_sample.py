"""Write the bundled sample (asr_stream/assets/sample.wav): a held-out sentence spoken by espeak-ng.

The sentence is from the synthetic corpus' *test* split (seed 0), so the bundled model never trained on
it; the voice (en-us) is one of its training voices. Deterministic: rerunning writes the same samples.
Usage: python tools/corpus/make_sample.py [OUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import soundfile as sf

from asr_stream.corpus.synth import synthesize

TEXT = "WHEN IT'S DARK ENOUGH YOU CAN SEE THE STARS"
VOICE, RATE, PITCH = "en-us", 170, 50


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "asr_stream" / "assets" / "sample.wav"
    out.parent.mkdir(parents=True, exist_ok=True)
    wave = synthesize(TEXT.lower(), VOICE, RATE, PITCH)
    sf.write(out, wave, 16000, subtype="PCM_16")
    out.with_suffix(".txt").write_text(TEXT + "\n")
    print(f"{out}: {len(wave) / 16000:.2f} s, '{TEXT}' ({VOICE}, rate {RATE}, pitch {PITCH})")


if __name__ == "__main__":
    main()
