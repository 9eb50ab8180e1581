"""Mutation check of the core: each mutant is a bug the test suite exists to catch; every one must be killed.

    make mutants            # or: python tools/checks/mutants.py [--only NAME ...] [--tests TEST ...] [--list]

Each mutant is one textual replacement (file, old, new) in the package. It is applied to a temporary copy
of the repository (the working tree is never edited), then its relevant fast tests run there with
``pytest -x``. A mutant is *killed* when a test fails; a *survivor* means the tests cannot see that bug,
and the script exits 1. The unmutated copy runs the union of the tests first: a mutant only counts as
killed if the same tests pass without it.

The Python that runs pytest is ``$MUTANTS_PYTHON`` if set, else the interpreter running this script
(``make mutants`` uses the project's ``.venv``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug: replace ``old`` (must occur exactly once in ``file``) by ``new``."""

    name: str  # short id, also accepted by --only
    what: str  # the bug, in words
    file: str  # path relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids / files that must catch it (run in this order, -x)


CORE = ("tests/equivalence/test_groups.py", "tests/equivalence/test_positions.py",
        "tests/equivalence/test_streaming.py")
WHISPER = ("tests/equivalence/test_whisper_encoder.py::test_chunk_windows_and_positions_follow_the_rule",
           "tests/equivalence/test_whisper_encoder.py::test_streaming_equals_the_training_forward_and_chunks_are_final")
WHISPER_AHEAD = ("tests/equivalence/test_whisper_encoder.py::test_lookahead_and_trailing_silence_windows_follow_the_rule",
                 "tests/equivalence/test_whisper_encoder.py::test_streaming_equals_the_training_forward_and_chunks_are_final",
                 "tests/equivalence/test_streaming.py::"
                 "test_whisper_lookahead_reads_one_chunk_of_silence_after_the_audio_and_hears_the_last_chunk")

MUTANTS = (
    Mutant("floor-positions", "every position is floored before RoPE (a silently integer φ)",
           "asr_stream/decoder.py", "position_ids=positions.to(torch.float32)",
           "position_ids=positions.floor().to(torch.float32)", CORE),
    Mutant("session-drops-phi", "the streaming session ignores φ (targets at 0, 1, ...)",
           "asr_stream/streaming/session.py", "return self.cfg.phi + row", "return float(row)", CORE),
    Mutant("train-target-pos+1", "training layout: target positions φ + i + 1 (off by one)",
           "asr_stream/groups.py", "pos = [phi + i for i in range(n_rows)]",
           "pos = [phi + i + 1 for i in range(n_rows)]", CORE),
    Mutant("stream-target-pos+1", "streaming: target positions φ + i + 1 (off by one)",
           "asr_stream/streaming/session.py", "return self.cfg.phi + row", "return self.cfg.phi + row + 1", CORE),
    Mutant("visibility+1", "wait-k visibility one chunk too many (min(k + j + 1, N)), training and streaming alike",
           "asr_stream/groups.py", "return min(k + units_done, n_chunks)", "return min(k + units_done + 1, n_chunks)",
           CORE),
    Mutant("visibility-1", "wait-k visibility one chunk too few (min(k + j - 1, N))",
           "asr_stream/groups.py", "return min(k + units_done, n_chunks)", "return min(k + units_done - 1, n_chunks)",
           CORE),
    Mutant("mask-chunk<=", "mask rule: a target row also sees chunk v_i (<= instead of <)",
           "asr_stream/groups.py", "(k.chunk[None, :] < q.chunk[:, None])", "(k.chunk[None, :] <= q.chunk[:, None])",
           CORE),
    Mutant("source-sees-target", "mask rule: source slots attend to target rows",
           "asr_stream/groups.py", "src_rule = src_k & (k.src[None, :] <= q.src[:, None])",
           "src_rule = (src_k & (k.src[None, :] <= q.src[:, None])) | (kk == TARGET)", CORE),
    Mutant("skip-position-reencode", "batch mode, reencode=position: target rows are not re-encoded",
           "asr_stream/streaming/session.py", "            if s.rows:\n                self._reencode_targets()",
           "            if False:\n                self._reencode_targets()", ("tests/equivalence/test_streaming.py",)),
    Mutant("skip-kv-reencode-targets", "batch mode, reencode=kv: the rebuilt cache leaves the target rows out",
           "asr_stream/streaming/session.py",
           "        if s.rows:\n            parts.append(target_elements(range(s.rows), [n] * s.rows",
           "        if False:\n            parts.append(target_elements(range(s.rows), [n] * s.rows",
           ("tests/equivalence/test_streaming.py",)),
    Mutant("onsets-ignore-prev", "ctc policy evidence: a chunk's first frame ignores the previous chunk's last frame "
           "(every chunk counts onsets as if the stream started there)",
           "asr_stream/model.py", "prev[:, None] if prev is not None else torch.zeros_like(post[:, :1])",
           "torch.zeros_like(post[:, :1])", ("tests/equivalence/test_policy.py",)),
    Mutant("pending-holds-160ms", "endpointer: the audio waiting to be fed holds at most 16 frames (160 ms, the test "
           "models' chunk); at the bundled model's 320 ms feed, a push longer than a feed loses half of every feed",
           "asr_stream/streaming/endpoint.py",
           "x = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]",
           "x = np.concatenate(self._pending[-16:])",
           ("tests/unit/test_endpointing.py::test_segments_start_at_speech_and_end_300_ms_into_a_pause_and_no_speech_is_dropped",
            "tests/unit/test_endpointing.py::test_max_length_cuts_in_speech_and_the_next_segment_goes_on_without_a_gap")),
    Mutant("pause-feeds-its-pre-roll", "endpointer: the last pre-roll frames of a pause that may end a long segment "
           "(rule 1's pause) are fed before the cut: the closing segment reads past its end, or the cut fails",
           "asr_stream/streaming/endpoint.py", "        return min(self._hold, self._silent_run)\n",
           "        return 0\n",
           ("tests/unit/test_endpointing.py::test_a_pause_cut_feeds_every_sample_once_whatever_the_pause_push_and_feed_sizes",)),
    Mutant("pause-cut-20ms-always", "endpointer: rule 1's pause cut goes 20 ms (2 frames) before the speech whatever "
           "the pre-roll (silero's is 80 ms)", "asr_stream/streaming/endpoint.py",
           "self._hold = -(-self._pre_roll // FRAME)", "self._hold = 2",
           ("tests/unit/test_endpointing.py::test_a_pause_cut_leaves_the_next_segment_its_pre_roll",)),
    Mutant("whisper-pos+1", "Whisper encoder: window positions 1, 2, ... instead of 0, 1, ... (off by one)",
           "asr_stream/encoder/whisper.py", "return (slot - before[:, None]).clamp(min=0)",
           "return (slot - before[:, None] + 1).clamp(min=0)", WHISPER),
    Mutant("whisper-stream-pos+1", "Whisper encoder, stream positions: each frame one position later than its place "
           "in the stream", "asr_stream/encoder/whisper.py",
           "return (first[:, None] + slot).clamp(min=0)", "return (first[:, None] + slot + 1).clamp(min=0)", WHISPER),
    Mutant("whisper-slide-late", "Whisper encoder, stream positions: past the last position the window slides one "
           "frame too late (its last frame would take a position past the end of the table)",
           "asr_stream/encoder/whisper.py",
           "(end - self.model.config.max_source_positions).clamp(min=0)",
           "(end - 1 - self.model.config.max_source_positions).clamp(min=0)", WHISPER),
    Mutant("whisper-context-1", "Whisper encoder: a stream carries one frame of left context too few",
           "asr_stream/encoder/whisper.py", "keep = max(P - 1, 0)", "keep = max(P - 2, 0)", WHISPER),
    Mutant("whisper-lag-1", "Whisper encoder, look-ahead: the step that receives chunk c emits chunk c - L + 1's "
           "frames (one chunk of lag too few)", "asr_stream/encoder/whisper.py",
           "out = self.model.layer_norm(hidden)[:, C : C + Fc]",
           "out = self.model.layer_norm(hidden)[:, C + Fc * min(L, 1) : C + Fc * min(L, 1) + Fc]", WHISPER_AHEAD),
    Mutant("whisper-silence-zero-pad", "Whisper encoder, trailing silence: its frames convolved from zero-valued mel "
           "frames (the convolution's padding) instead of floor-value (silent) ones", "asr_stream/encoder/whisper.py",
           "(B * n, last.shape[1], 2 * S + 2), self.logmel.silence)", "(B * n, last.shape[1], 2 * S + 2), 0.0)",
           WHISPER_AHEAD),
    Mutant("whisper-silence-positions", "Whisper encoder, stream positions with trailing silence: the silence frames "
           "take the positions before the window's end instead of continuing past it", "asr_stream/encoder/whisper.py",
           "end = (chunk + 1) * self.frames_per_chunk + self.silence_frames",
           "end = (chunk + 1) * self.frames_per_chunk", WHISPER_AHEAD),
    Mutant("lookahead-not-padded", "an utterance is not padded with the encoder's look-ahead chunks (its last chunk "
           "never comes out of the encoder)", "asr_stream/model.py",
           "return max(1, math.ceil(num_samples / self.chunk_samples)) + self.encoder.lookahead_chunks",
           "return max(1, math.ceil(num_samples / self.chunk_samples))", WHISPER_AHEAD),
    Mutant("lookahead-finish-no-silence", "the streaming session's finish() reads the zero-padded tail only, not the "
           "look-ahead chunks of zeros that training pads with", "asr_stream/streaming/session.py",
           "if s.closing and s.chunks_read < self.model.num_chunks(s.samples_in):",
           "if s.closing and (s.buffer.size or s.chunks_read == 0):", WHISPER_AHEAD),
    Mutant("lookahead-ctc-end-unshifted", "a restart's word end from the CTC tokens of a look-ahead encoder is taken "
           "at the frame index, one chunk after the audio it holds", "asr_stream/streaming/session.py",
           "end -= self.model.encoder.lookahead_chunks * self.model.chunk_samples", "end -= 0",
           ("tests/unit/test_restart.py::test_a_lookahead_encoder_s_ctc_word_ends_are_moved_back_by_its_lag",)),
    Mutant("load-ignores-encoder-dir", "SpeechLLM.load builds a Whisper encoder from hf_name_or_path, not from the "
           "model directory's encoder/ (a saved model needs the folder it was trained from)",
           "asr_stream/model.py", 'if cfg.encoder.kind == "whisper" and arch.is_dir():', "if False:",
           ("tests/unit/test_model_io.py::test_whisper_model_loads_without_the_folder_it_was_trained_from",)),
    Mutant("stream-context-pos+1", "streaming: context positions one place later than the training layout's",
           "asr_stream/streaming/session.py", "parts = [context_elements(self.cfg.mode, len(ctx), self.cfg.phi),",
           "parts = [context_elements(self.cfg.mode, len(ctx), self.cfg.phi + 1),", ("tests/equivalence/test_context.py",)),
    Mutant("source-sees-context", "the source (prompt and audio) attends to the context list",
           "asr_stream/groups.py", "ok = torch.where(src_q, src_rule, torch.where",
           "ok = torch.where(src_q, src_rule | ctx_k, torch.where", ("tests/equivalence/test_context.py",)),
    Mutant("context-once", "the context enters the cache only at the stream's first utterance, not after a cut",
           "asr_stream/streaming/session.py", "P, ctx = len(m.prompt_ids), self.context_ids",
           "P, ctx = len(m.prompt_ids), ([] if self.words else self.context_ids)", ("tests/equivalence/test_context.py",)),
)


def copy_tree(dst: Path) -> None:
    """The files pytest needs: the package, the tests, the docs (a test checks a picture in docs/design.md) and the
    project file (for pytest's settings)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("asr_stream", "tests", "docs"):
        shutil.copytree(ROOT / d, dst / d, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dst / "pyproject.toml")


def apply(m: Mutant, root: Path) -> None:
    f = root / m.file
    text = f.read_text()
    n = text.count(m.old)
    if n != 1:
        raise SystemExit(f"mutants: error: mutant {m.name}: the text to replace occurs {n} times in {m.file} "
                         "(the code moved on: update tools/checks/mutants.py)")
    f.write_text(text.replace(m.old, m.new))


def pytest(python: str, root: Path, tests: tuple[str, ...], stop_first: bool) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header", "-W", "ignore"]
    cmd += ["-x"] if stop_first else []
    proc = subprocess.run(cmd + list(tests), cwd=root, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].split(" - ")[0]
    return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--tests", nargs="+", metavar="TEST", help="run these tests against every mutant instead of its own")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.tests:
        chosen = [replace(m, tests=tuple(args.tests)) for m in chosen]
    if args.only and len(chosen) != len(set(args.only)):
        ap.error(f"unknown mutant in {args.only}; known: {', '.join(m.name for m in MUTANTS)}")
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:26} {m.what}")
        return 0
    python = os.environ.get("MUTANTS_PYTHON", sys.executable)

    with tempfile.TemporaryDirectory(prefix="asr-stream-mutants-") as tmp:
        base = Path(tmp) / "base"
        copy_tree(base)
        union = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        t0 = time.monotonic()
        rc, out = pytest(python, base, union, stop_first=False)
        if rc != 0:
            print(out[-3000:])
            print(f"mutants: error: the unmutated tests fail ({first_failure(out)}); fix them first", file=sys.stderr)
            return 2
        print(f"unmutated: {' '.join(union)} pass ({time.monotonic() - t0:.0f} s)\n")
        print(f"{'mutant':26} {'result':9} {'time':>6}  first failing test")
        survivors = []
        for m in chosen:
            root = Path(tmp) / m.name
            copy_tree(root)
            apply(m, root)
            t0 = time.monotonic()
            rc, out = pytest(python, root, m.tests, stop_first=True)
            killed = rc == 1  # 1: tests failed; anything else (collection error, crash) is reported as is
            if rc not in (0, 1):
                print(out[-3000:])
            result = "killed" if killed else ("SURVIVED" if rc == 0 else f"ERROR {rc}")
            print(f"{m.name:26} {result:9} {time.monotonic() - t0:5.0f}s  {first_failure(out) if killed else '-'}", flush=True)
            if not killed:
                survivors.append(m.name)
            shutil.rmtree(root)
    print(f"\n{len(chosen) - len(survivors)} of {len(chosen)} mutants killed" +
          (f"; not killed: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
