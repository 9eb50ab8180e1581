"""Outputs never replace what they point at: one rule (transcript.output_target) for every writer. A regular file or
a new path is written (temporary file + rename); a symbolic link is written through (its target replaced, the link
kept); a directory, FIFO, device or socket is refused with one line before any work. A write that fails (a full
disk) names the file, and transcribe goes on with the next input."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from pathlib import Path

import pytest
import soundfile as sf

from asr_stream.audio import sources
from asr_stream.transcript import atomic_write

from ..conftest import noise_audio


@pytest.fixture(scope="module")
def model_dir(make_model, tmp_path_factory) -> Path:
    return make_model(160).save(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def wav(tmp_path) -> Path:
    p = tmp_path / "a.wav"
    sf.write(p, noise_audio(1.0, seed=3), 16000)
    return p


def run(args: list[str], capsys) -> tuple[int, str, str]:
    from asr_stream.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def device(tmp: Path) -> Path:
    """A character device to point outputs at: a null device made in ``tmp`` where we may (root), else /dev/null,
    which only root could replace: a broken writer must not take the machine's /dev/null with it."""
    dev = tmp / "null.json"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        return dev
    except PermissionError:
        return Path(os.devnull)


def special_files(tmp: Path) -> dict[str, Path]:
    """One of each kind that must never be replaced, and links to them."""
    fifo = tmp / "fifo.json"
    os.mkfifo(fifo)
    sock = tmp / "sock.json"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()  # the socket file stays
    (tmp / "dir.json").mkdir()
    kinds = {"a FIFO": fifo, "a socket": sock, "a directory": tmp / "dir.json", "a character device": device(tmp)}
    for kind, p in list(kinds.items()):
        link = tmp / f"link-{p.name}"
        link.symlink_to(p)
        kinds[f"{kind} (through a symbolic link)"] = link
    return kinds


def test_the_rule_refuses_what_is_not_a_regular_file_and_follows_links(tmp_path):
    for kind, p in special_files(tmp_path).items():
        mode = os.stat(p).st_mode
        with pytest.raises(ValueError) as e:
            atomic_write(p, "x")
        assert f"output {p} is {kind}: refusing to replace it" in str(e.value)
        assert os.stat(p).st_mode == mode  # untouched
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    with pytest.raises(ValueError, match="loop.json: Too many levels of symbolic links"):
        atomic_write(loop, "x")
    # written through: a link to a file, a link to a new path (its folder exists), a chain of links
    target, new = tmp_path / "target.json", tmp_path / "sub" / "new.json"
    target.write_text("old")
    target.chmod(0o640)
    new.parent.mkdir()
    for name, dest in (("l1", target), ("l2", new)):
        (tmp_path / name).symlink_to(dest)
    (tmp_path / "l3").symlink_to(tmp_path / "l1")
    assert atomic_write(tmp_path / "l3", "one") == target.resolve()
    assert atomic_write(tmp_path / "l2", "two") == new.resolve()
    assert target.read_text() == "one" and new.read_text() == "two"
    assert (tmp_path / "l1").is_symlink() and (tmp_path / "l3").is_symlink() and (tmp_path / "l2").is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the target keeps its permissions
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_every_writer_refuses_a_fifo_or_device_before_any_work(model_dir, wav, tmp_path, capsys, monkeypatch):
    """transcribe --json / --format, client --json, mic --output: one line, exit 2, nothing run (no 'final:' line,
    no connection tried, no microphone opened), and the FIFO or device is still what it was."""
    kinds = special_files(tmp_path)
    fifo, link, dev = kinds["a FIFO"], kinds["a FIFO (through a symbolic link)"], kinds["a character device"]
    fmt_dir = tmp_path / "subs"
    fmt_dir.mkdir()
    os.mkfifo(fmt_dir / "a.srt")
    monkeypatch.setenv(sources.FAKE_MIC_ENV, str(wav))
    cases = [
        ["transcribe", str(wav), "--model", str(model_dir), "--json", str(fifo)],
        ["transcribe", str(wav), "--model", str(model_dir), "--json", str(link)],
        ["transcribe", str(wav), "--model", str(model_dir), "--json", str(dev)],
        ["transcribe", str(wav), "--model", str(model_dir), "--format", "txt", "srt", "--output-dir", str(fmt_dir)],
        ["client", str(wav), "--url", "ws://127.0.0.1:9/", "--json", str(fifo)],
        ["mic", "--model", str(model_dir), "--output", str(link)],
        ["mic", "--model", str(model_dir), "--output", str(dev)],
    ]
    for args in cases:
        code, out, err = run(args, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "refusing to replace it" in lines[0], (args, err)
        assert "final:" not in out and "listening" not in err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISFIFO(os.stat(fmt_dir / "a.srt").st_mode)
    assert stat.S_ISCHR(os.stat(dev).st_mode) and link.is_symlink()
    assert not (fmt_dir / "a.txt").exists()  # refused before the first file was transcribed


def test_links_are_written_through_and_an_input_behind_a_link_is_refused(model_dir, wav, tmp_path, capsys, monkeypatch):
    target, link = tmp_path / "out" / "result.json", tmp_path / "link.json"
    target.parent.mkdir()
    link.symlink_to(target)  # a link to a new path
    code, out, _ = run(["transcribe", str(wav), "--model", str(model_dir), "--json", str(link)], capsys)
    assert code == 0 and link.is_symlink() and json.loads(target.read_text())["files"][0]["file"] == str(wav)
    code, _, _ = run(["transcribe", str(wav), "--model", str(model_dir), "--json", str(link)], capsys)
    assert code == 0 and link.is_symlink() and target.is_file()  # and again, now that the target exists
    to_input = tmp_path / "in.json"
    to_input.symlink_to(wav)
    code, _, err = run(["transcribe", str(wav), "--model", str(model_dir), "--json", str(to_input)], capsys)
    assert code == 2 and "is also an input: refusing to write over it" in err and to_input.is_symlink()
    l1, l2 = tmp_path / "l1.json", tmp_path / "l2.json"  # a loop of links: one line, no traceback
    l1.symlink_to(l2)
    l2.symlink_to(l1)
    code, _, err = run(["transcribe", str(wav), "--model", str(model_dir), "--json", str(l1)], capsys)
    assert code == 2 and err.strip() == f"asr-stream: error: output {l1}: Too many levels of symbolic links"
    # mic --output through a link: the words go to the target, the link stays
    monkeypatch.setenv(sources.FAKE_MIC_ENV, str(wav))
    words, mic_link = tmp_path / "words.txt", tmp_path / "mic-link.txt"
    mic_link.symlink_to(words)
    code, out, _ = run(["mic", "--model", str(model_dir), "--output", str(mic_link)], capsys)
    final = [line for line in out.splitlines() if line.startswith("final: ")]
    assert code == 0 and mic_link.is_symlink() and words.read_text() == final[0][len("final: "):] + "\n"


def test_a_failed_write_names_the_file_and_the_batch_goes_on(model_dir, tmp_path, capsys, monkeypatch):
    """A full disk while a.txt is written: the error names a.txt, no temporary file is left, b is still transcribed
    and written, --json lists the failure, exit status 1."""
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, noise_audio(1.0, seed=3), 16000)
    sf.write(b, noise_audio(1.0, seed=4), 16000)
    subs, report = tmp_path / "subs", tmp_path / "all.json"
    real_write_text = Path.write_text

    def disk_full_for_a(self, data, *args, **kwargs):
        if self.name.startswith(".a.txt."):  # atomic_write's temporary file for a.txt: half written, then full
            real_write_text(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full_for_a)
    code, out, err = run(["transcribe", str(a), str(b), "--model", str(model_dir), "--format", "txt", "json",
                          "--output-dir", str(subs), "--json", str(report)], capsys)
    assert code == 1
    assert f"asr-stream: error: cannot write {subs / 'a.txt'}: No space left on device" in err.splitlines()
    assert sorted(p.name for p in subs.iterdir()) == ["a.json", "b.json", "b.txt"]  # no a.txt, no .tmp left
    r = json.loads(report.read_text())
    assert [f["file"] for f in r["files"]] == [str(a), str(b)]
    assert r["failed"] == [{"file": str(a), "error": f"cannot write {subs / 'a.txt'}: No space left on device"}]
    assert out.count("final: ") == 2
