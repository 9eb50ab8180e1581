"""Copy a trained model into the package as the bundled default, with float16 weights (half the size).

Usage: python tools/model/bundle_model.py [SRC=exp/synthetic/model] [DST=asr_stream/assets/default_model]
The weights load back as float32. Prints the size (all files, ``encoder/`` included); the bundled model must stay
<= 30 MB. A model with a Whisper encoder brings its ``encoder/`` folder (architecture and NOTICE; the weights are in
model.safetensors), so the bundle loads without the folder the encoder was trained from.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from asr_stream.model import SpeechLLM

LIMIT_MB = 30.0


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "exp" / "synthetic" / "model"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else root / "asr_stream" / "assets" / "default_model"
    model = SpeechLLM.load(src)
    if dst.exists():
        shutil.rmtree(dst)
    model.save(dst, dtype=torch.float16)
    size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file()) / 2**20
    print(f"{src} -> {dst}: {size:.1f} MB")
    if size > LIMIT_MB:
        sys.exit(f"bundled model is {size:.1f} MB, over the {LIMIT_MB} MB limit")


if __name__ == "__main__":
    main()
