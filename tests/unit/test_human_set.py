"""The real-human-speech test set from Debian's pocketsphinx-testdata (asr_stream/data/human.py,
tools/corpus/make_human_set.py): on the installed package, and on a small made-up copy of its layout."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_stream.data import DataError, read_manifest
from asr_stream.data import human

from ..sysdeps import needs

SR = 16_000
REPO = Path(__file__).resolve().parents[2]


def _tone(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SR)) * 3000).astype(np.int16)


def _fake_package(root: Path) -> Path:
    """The package's layout under ``root`` (what ``dpkg-deb -x`` gives), with 2 + 1 + 1 made-up recordings."""
    data = root / "usr/share/pocketsphinx/test/data"
    (data / "librivox").mkdir(parents=True)
    (data / "cards").mkdir()
    (data / "librivox/fileids").write_text("book-0001\nbook-0002\n")
    (data / "librivox/transcription").write_text("<s> and mister o'brien said </s> (book-0001)\n\n"
                                                 "<s> <sil> a more a amiable man </s> (book-0002)\n")
    sf.write(str(data / "librivox/book-0001.wav"), _tone(1.25, 0), SR, subtype="PCM_16")
    sf.write(str(data / "librivox/book-0002.wav"), _tone(0.5, 1), SR, subtype="PCM_16")
    (data / "cards/cards.fileids").write_text("001\n")
    (data / "cards/cards.transcription").write_text("<s> ten of clubs  </s> (001)\n")
    sf.write(str(data / "cards/001.wav"), _tone(0.75, 2), SR, subtype="PCM_16")
    _tone(0.3, 3).astype("<i2").tofile(data / "goforward.raw")
    (data / "goforward.gram").write_text("#JSGF V1.0;\ngrammar goforward;\n\npublic <move> = go forward ten meters;\n\n"
                                         "public <move2> = go <direction> [meter | meters];\n")
    doc = root / "usr/share/doc/pocketsphinx-testdata"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("License: BSD-2\n")
    with gzip.open(doc / "changelog.Debian.gz", "wt") as f:
        f.write("pocketsphinx (0.8+5prealpha+1-99) unstable; urgency=medium\n\n  * made up\n")
    return data


def _tree_hash(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        h.update(str(p.relative_to(d)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_a_made_up_copy_of_the_package(tmp_path: Path) -> None:
    src = _fake_package(tmp_path / "root")
    before = _tree_hash(tmp_path / "root")
    out = tmp_path / "set"
    s = human.make_human_set(out, src)
    utts = read_manifest(s.manifests["all"])
    assert [(u.id, u.text, u.speaker) for u in utts] == [
        ("librivox-book-0001", "AND MISTER O'BRIEN SAID", "librivox"),
        ("librivox-book-0002", "A MORE A AMIABLE MAN", "librivox"),
        ("cards-001", "TEN OF CLUBS", "cards"),
        ("goforward", "GO FORWARD TEN METERS", "goforward"),
    ]
    assert [u.duration for u in utts] == [1.25, 0.5, 0.75, 0.3]
    assert [len(read_manifest(s.manifests[g])) for g in ("librivox", "cards", "goforward")] == [2, 1, 1]
    # the package's samples, unchanged (the raw file read as 16-bit little-endian)
    got, rate = sf.read(str(utts[3].audio_path), dtype="int16")
    assert rate == SR and np.array_equal(got, np.fromfile(src / "goforward.raw", "<i2"))
    assert np.array_equal(sf.read(str(utts[0].audio_path), dtype="int16")[0], _tone(1.25, 0))
    notice = (out / "NOTICE").read_text()
    assert "pocketsphinx-testdata" in notice and "0.8+5prealpha+1-99" in notice and "BSD-2" in notice
    assert "4 utterances, 2.80 s" in notice and "never trained on" in notice
    assert (out / "copyright").read_text() == "License: BSD-2\n"
    assert s.version == "0.8+5prealpha+1-99"
    assert _tree_hash(tmp_path / "root") == before  # the source is only read

    with pytest.raises(DataError, match="not empty"):  # never writes over a folder by default
        human.make_human_set(out, src)
    (src / "cards/cards.transcription").write_text("<s> ace of spades </s> (001)\n")
    before = _tree_hash(tmp_path / "root")
    assert read_manifest(human.make_human_set(out, src, overwrite=True).manifests["cards"])[0].text == "ACE OF SPADES"
    other = tmp_path / "mine"
    (other / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="not a set written by make_human_set"):  # --overwrite spares other folders
        human.make_human_set(other, src, overwrite=True)
    with pytest.raises(DataError, match="outside the source folder"):
        human.make_human_set(src / "out", src)
    assert _tree_hash(tmp_path / "root") == before and (other / "x").is_dir()


@pytest.mark.parametrize("path, text, error", [
    ("librivox/transcription", "<s> and mister </s> (book-0001)\n", "1 transcripts but 2 file ids"),
    ("librivox/transcription", "<s> one </s> (book-0002)\n<s> two </s> (book-0001)\n",
     "transcript of 'book-0002' where .*fileids lists 'book-0001'"),
    ("librivox/transcription", "<s> one </s> (book-0001)\n<s> 2 too </s> (book-0002)\n",
     r"transcription:2: unexpected token '2'"),
    ("librivox/transcription", "<s> one </s> (book-0001)\nno id here\n", r"transcription:2: expected '<s> words"),
    ("cards/cards.transcription", "<s> </s> (001)\n", r"cards.transcription:1: empty transcript"),
    ("goforward.gram", "public <move> = go <direction>;\n", r"unexpected token '<direction>'"),
])
def test_bad_package_files_are_one_line_errors(tmp_path: Path, path: str, text: str, error: str) -> None:
    src = _fake_package(tmp_path / "root")
    (src / path).write_text(text)
    with pytest.raises(DataError, match=error) as e:
        human.make_human_set(tmp_path / "set", src)
    assert "\n" not in str(e.value) and not (tmp_path / "set").exists()


def test_missing_package_names_the_make_target(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(human, "DEFAULT_SOURCE", tmp_path / "usr/share/pocketsphinx/test/data")
    with pytest.raises(DataError, match=r"pocketsphinx-testdata is not installed \(`make corpus-sysdeps` installs it\)"):
        human.make_human_set(tmp_path / "set", human.DEFAULT_SOURCE)
    (tmp_path / "usr/share").mkdir(parents=True)
    with pytest.raises(DataError, match=r"share: not the data folder of pocketsphinx-testdata \(no librivox/transcr"):
        human.make_human_set(tmp_path / "set", tmp_path / "usr/share")  # a folder too high up
    r = subprocess.run([sys.executable, str(REPO / "tools" / "corpus" / "make_human_set.py"), str(tmp_path / "set"),
                        "--source", str(tmp_path / "nowhere")], capture_output=True, text=True, cwd=REPO,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such folder" in r.stderr, r.stderr


@needs("pocketsphinx-testdata")
def test_the_installed_package(tmp_path: Path) -> None:
    src = human.DEFAULT_SOURCE
    s = human.make_human_set(tmp_path / "human")
    utts = read_manifest(s.manifests["all"])
    assert len(utts) == 11 and [u.speaker for u in utts].count("librivox") == 5
    assert [u.speaker for u in utts].count("cards") == 5
    text = {u.id: u.text for u in utts}
    assert text["librivox-sense_and_sensibility_01_austen_64kb-0880"] == "HE WAS NOT AN ILL DISPOSED YOUNG MAN"
    assert text["librivox-sense_and_sensibility_01_austen_64kb-0870"].startswith("AND MISTER JOHN DASHWOOD HAD ")
    assert text["cards-005"] == "EIGHT OF SPADES FOUR OF CLUBS SEVEN OF HEARTS"
    assert text["goforward"] == "GO FORWARD TEN METERS"
    sources = [src / "librivox" / f"{u.id.removeprefix('librivox-')}.wav" for u in utts[:5]]
    sources += [src / "cards" / f"{u.id.removeprefix('cards-')}.wav" for u in utts[5:10]]
    for u, orig in zip(utts, sources + [src / "goforward.raw"]):
        info = sf.info(str(u.audio_path))
        assert (info.samplerate, info.channels) == (SR, 1), u.id
        frames = orig.stat().st_size // 2 if orig.suffix == ".raw" else sf.info(str(orig)).frames
        assert info.frames == frames and u.duration == frames / SR, u.id
    assert sum(u.duration for u in utts) == pytest.approx(37.17, abs=0.01)
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "pocketsphinx-testdata"], capture_output=True,
                             text=True).stdout
    assert s.version == version and f"version {version}" in (tmp_path / "human/NOTICE").read_text()
