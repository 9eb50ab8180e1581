"""Our own calls into transformers / peft raise no deprecation warnings (issue 16, item 5).

transformers 5.24 deprecates ``past_key_values=`` on ``Phi3ForCausalLM.forward`` (FutureWarning, to be
removed in 5.40) in favour of ``cache=``; every CLI run used to print it. Building a LoRA model still
warns inside peft (``get_peft_model`` calls a deprecated transformers method: not our call), so models
are built first and only the streaming and training paths run with these warnings turned into errors.
"""

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from asr_stream.model import Batch, SpeechLLM
from asr_stream.presets import test_sized
from asr_stream.streaming import StreamingSession
from asr_stream.streaming.batched import BatchedStreams

from ..conftest import SENTENCES, noise_audio


@pytest.mark.filterwarnings("error::FutureWarning", "error::DeprecationWarning")
@pytest.mark.parametrize("lora_r", [0, 4])
def test_streaming_and_training_paths_raise_no_deprecation_warnings(codec, lora_r):
    cfg = test_sized(160)
    cfg = replace(cfg, decoder=replace(cfg.decoder, lora_r=lora_r))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # model construction (peft's own deprecated call) is not under test
        model = SpeechLLM(cfg, codec)
    wave = noise_audio(1.3, seed=4)
    tokens = codec.encode(SENTENCES[0])
    batch = Batch(torch.from_numpy(wave)[None], torch.tensor([len(wave)]), [tokens])

    model.train()
    model(batch).loss.backward()  # training forward + backward
    model.eval()
    with torch.no_grad():
        full = model(batch, mode="group", k=3, phi=0.0).target_logits[0]
    for kw in (dict(mode="group"), dict(mode="interleaved"), dict(mode="batch", reencode="position"),
               dict(mode="batch", reencode="kv")):
        s = StreamingSession(model, k=3, phi=0.0, max_tokens_per_s=100.0, **kw)
        s.teacher_force(tokens)
        for i in range(0, len(wave), 3000):
            s.push(wave[i : i + 3000])
        s.finish()
        if kw["mode"] == "group":  # the cache argument really carries the cache: streaming == training
            assert (torch.stack(s.logits) - full).abs().max().item() <= 1e-4
    words = BatchedStreams.run(model, [wave, wave[:9000]], k=3, phi=0.0)
    assert len(words) == 2 and all(isinstance(w, list) for w in words)
    assert np.isfinite(full.numpy()).all()
