"""Write the held-out check list for the bundled model's quality test (tests/data/heldout.json).

The synthetic corpus keeps transcripts but not each utterance's espeak-ng settings; they follow from the
corpus plan, which is seeded. This rebuilds the plan from ``<corpus>/synth_config.json``, checks that it
gives the transcripts on disk, and writes the first N test-split utterances (in id order, the order the
evaluation reads them) as {id, text, spoken, voice, rate, pitch}, where spoken is what espeak-ng was given:
enough to speak them again with espeak-ng, so the test needs no audio files in the repository.

    .venv/bin/python tools/corpus/make_heldout.py data/synthetic tests/data/heldout.json --num 40
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from asr_stream.data import read_corpus, synth


def heldout(corpus: Path, num: int) -> list[dict]:
    meta_file = corpus / "synth_config.json"
    if not meta_file.is_file():
        raise SystemExit(f"{meta_file}: not found (a corpus written by tools/corpus/synth_corpus.py has it)")
    meta = json.loads(meta_file.read_text())
    names = {f.name for f in fields(synth.SynthConfig)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta.items() if k in names}
    cfg = synth.SynthConfig(out_dir=corpus, **{**kw, "fortune_dir": Path(kw["fortune_dir"])})
    plan = synth.plan_corpus(cfg, synth.load_sentences(cfg), meta["train_voices"],
                             synth.load_extra_train_sentences(cfg))
    by_id = {p.id: p for p in plan if p.split == "test"}
    on_disk = sorted(read_corpus(f"librispeech:{corpus}:test"), key=lambda u: u.id)[:num]
    out = []
    for u in on_disk:
        p = by_id.get(u.id)
        if p is None or p.sentence.text != u.text:
            raise SystemExit(f"{u.id}: the rebuilt plan does not give the corpus transcript (other fortunes or espeak-ng?)")
        out.append(dict(id=u.id, text=u.text, spoken=p.sentence.spoken, voice=p.voice, rate=p.rate, pitch=p.pitch))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--num", type=int, default=40)
    a = ap.parse_args(argv)
    items = heldout(a.corpus, a.num)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(items, indent=1) + "\n")
    print(f"{a.out}: {len(items)} test utterances, {sum(len(i['text'].split()) for i in items)} words")


if __name__ == "__main__":
    main()
