"""BatchedStreams: several streams in one batched decoder forward per step == separate sessions."""

import pytest
import torch

from asr_stream.streaming import StreamingSession
from asr_stream.streaming.batched import BatchedStreams

from ..conftest import SENTENCES, TOL, noise_audio

LENGTHS = (1.3, 2.1, 0.7)  # seconds: different lengths, not whole chunks


def separate(model, waves, block, forced=None, **kw):
    out = []
    for b, w in enumerate(waves):
        s = StreamingSession(model, **kw)
        if forced is not None:
            s.teacher_force(forced[b])
        for i in range(0, len(w), block):
            s.push(w[i : i + block])
        s.finish()
        out.append(s)
    return out


@pytest.mark.parametrize("encoder", ["own", "whisper", "whisper-lookahead"])
@pytest.mark.parametrize("mode", ["group", "interleaved", "batch"])
@pytest.mark.parametrize("prompt", ["", "TRANSCRIBE"])
def test_batched_teacher_forced_logits_equal_separate_sessions(make_model, codec, mode, prompt, encoder):
    model = make_model(160, prompt=prompt, encoder=encoder)
    waves = [noise_audio(sec, seed=10 + b) for b, sec in enumerate(LENGTHS)]
    forced = [codec.encode(SENTENCES[b]) for b in range(3)]
    kw = dict(mode=mode, k=2, phi=0.5 if mode == "group" else 0.0, max_tokens_per_s=100.0)
    ref = separate(model, waves, 1000, forced, **kw)
    eng = BatchedStreams(model, 3, **kw)
    for b in range(3):
        eng.sessions[b].teacher_force(forced[b])
    # audio arrives in different block sizes per stream, interleaved in time
    blocks = (1000, 3000, 777)
    pos = [0, 0, 0]
    words = [[], [], []]
    while any(p < len(w) for p, w in zip(pos, waves)):
        for b, w in enumerate(waves):
            if pos[b] < len(w):
                words[b] += eng.push(b, w[pos[b] : pos[b] + blocks[b]])
                pos[b] += blocks[b]
    for b in range(3):
        words[b] += eng.finish(b)
    assert eng.steps < sum(len(r.logits) for r in ref) + sum(r.state.chunks_read for r in ref)  # calls were shared
    for b in range(3):
        got, want = torch.stack(eng.sessions[b].logits), torch.stack(ref[b].logits)
        assert got.shape == want.shape == (len(forced[b]) + 1, len(codec))
        assert (got - want).abs().max().item() <= TOL, b
        assert [w.text for w in words[b]] == [w.text for w in ref[b].words]
        assert [w.time_ms for w in words[b]] == [w.time_ms for w in ref[b].words]
        s, r = eng.sessions[b].state, ref[b].state
        assert (s.decoder_positions, s.chunks_read, s.rows, s.tokens) == (r.decoder_positions, r.chunks_read, r.rows, r.tokens)
    assert not eng.attached and eng.length == 0  # every stream is done: the batch is empty


@pytest.mark.parametrize("mode", ["group", "interleaved"])
def test_batched_greedy_words_equal_separate_sessions(make_model, mode):
    model = make_model(160)
    waves = [noise_audio(sec, seed=20 + b) for b, sec in enumerate(LENGTHS)]
    ref = separate(model, waves, 2560, mode=mode, k=2)
    got = BatchedStreams.run(model, waves, mode=mode, k=2)
    for b in range(3):
        assert got[b] == ref[b].words
        assert len(ref[b].state.tokens) > 0
    # the same through the serving API, all audio queued at once: encoders are batched too
    eng = BatchedStreams(model, 3, mode=mode, k=2)
    for b, w in enumerate(waves):
        eng.feed(b, w)
        eng.end(b)
    eng.drain()
    assert [eng.finish(b) for b in range(3)] == got
    assert eng.encoder_calls > 0 and eng.encoder_streams >= 2 * eng.encoder_calls


def test_slot_reuse_after_reset(make_model):
    """A slot that finished is reset and reused while another stream is mid-utterance."""
    model = make_model(160, prompt="TRANSCRIBE")
    a, b, c = (noise_audio(sec, seed=30 + i) for i, sec in enumerate((2.0, 0.6, 0.9)))
    eng = BatchedStreams(model, 2, k=2)
    wa = eng.push(0, a[:8000])
    wb = eng.push(1, b)
    wb += eng.finish(1)
    assert eng.done(1) and eng.attached == [0]
    eng.reset(1)
    wc = eng.push(1, c[:5000])
    wa += eng.push(0, a[8000:])
    wc += eng.push(1, c[5000:])
    wa += eng.finish(0)
    wc += eng.finish(1)
    ref = separate(model, [a, b, c], 4000, k=2)
    assert wa == ref[0].words and wb == ref[1].words and wc == ref[2].words
    assert eng.sessions[1].words == ref[1].words + ref[2].words  # words are kept across reset, as in a session
    assert all(len(r.words) for r in ref)

@pytest.mark.parametrize("encoder", ["own", "whisper", "whisper-lookahead"])
def test_churn_of_streams_equals_lone_sessions(make_model, codec, encoder):
    """A server's pattern: 4 slots, 9 streams of different lengths starting at different times, each slot reused as
    soon as its stream is done. Every stream's teacher-forced logits and words equal a lone session's, while the
    engine computes only the rows with work, reuses freed cache rows, compacts rows and columns, and encodes
    streams that are at different points of their audio in one encoder call (the own encoder's ``stream_many``;
    Whisper's states have one shape wherever a stream is, so they stack)."""
    model = make_model(160, encoder=encoder)
    lengths = (1.1, 0.5, 1.7, 0.8, 1.3, 0.6, 0.9, 1.5, 0.7)
    waves = [noise_audio(sec, seed=60 + j) for j, sec in enumerate(lengths)]
    forced = [codec.encode(SENTENCES[j % len(SENTENCES)])[: 2 + j] for j in range(len(waves))]
    kw = dict(k=2, max_tokens_per_s=100.0)
    ref = separate(model, waves, 1000, forced, **kw)
    eng = BatchedStreams(model, 4, **kw)
    for b in range(4):
        eng.release(b)
    queue, live, got = list(range(len(waves))), {}, {}
    sub_steps, rows_seen, tick = 0, 0, 0
    forward_rows = eng._forward_rows

    def counting(*a, **k):
        nonlocal sub_steps
        sub_steps += 1
        return forward_rows(*a, **k)

    eng._forward_rows = counting
    while queue or live:
        for b in range(4):  # a free slot takes the next stream, one new stream per tick (staggered starts)
            if b not in live and queue and tick % 2 == b % 2:
                j = queue.pop(0)
                eng.reset(b)
                eng.sessions[b].teacher_force(forced[j])
                live[b], got[j] = [j, 0], []
        for b, (j, pos) in list(live.items()):
            w = waves[j]
            eng.feed(b, w[pos : pos + 1000])
            live[b][1] = pos + 1000
            if pos + 1000 >= len(w):
                eng.end(b)
        eng.drain()
        rows_seen = max(rows_seen, len(eng.slot_at))
        for b, (j, pos) in list(live.items()):
            got[j] += eng.poll(b)
            if pos >= len(waves[j]) and eng.done(b):
                got[j] += eng.finish(b)
                n = len(forced[j]) + 1
                assert (torch.stack(eng.sessions[b].logits[-n:]) - torch.stack(ref[j].logits)).abs().max().item() <= TOL, j
                del live[b]
        tick += 1
    for j in range(len(waves)):
        assert got[j] == ref[j].words, j
    assert sub_steps > 0 and rows_seen <= 4  # steps with waiting streams left them out; freed rows were reused
    assert eng.encoder_streams > eng.encoder_calls  # streams at different chunk counts were encoded together
    assert not eng.attached and eng.length == 0


def test_errors(make_model):
    model = make_model(160)
    with pytest.raises(ValueError, match="reencode"):
        BatchedStreams(model, 2, mode="batch", reencode="kv")
    with pytest.raises(ValueError, match="at least one"):
        BatchedStreams(model, 0)


def serve_rounds(eng, waves, block):
    """Serving rounds: every stream gets its next block of audio, then the engine runs until all wait."""
    for r in range(0, max(len(w) for w in waves), block):
        for b, w in enumerate(waves):
            if r < len(w):
                eng.feed(b, w[r : r + block])
        eng.drain()


def test_stream_that_ends_early_in_a_batch(make_model, codec):
    """EOS before the end of the audio: that stream skips its remaining chunks while the others go on."""
    model = make_model(160)
    waves = [noise_audio(2.0, seed=40), noise_audio(1.5, seed=41)]
    forced = [codec.encode("A SMALL"), codec.encode(SENTENCES[0])]
    ref = separate(model, waves, 2560, forced, k=2, max_tokens_per_s=100.0)
    assert ref[0].state.ended and ref[0].state.decoder_positions < 4 * 2 * 13  # stopped reading early
    eng = BatchedStreams(model, 2, k=2, max_tokens_per_s=100.0)
    for b in range(2):
        eng.sessions[b].teacher_force(forced[b])
    serve_rounds(eng, waves, 2560)
    for b in range(2):
        eng.finish(b)
        assert (torch.stack(eng.sessions[b].logits) - torch.stack(ref[b].logits)).abs().max().item() <= TOL
        assert eng.sessions[b].words == ref[b].words
        assert eng.sessions[b].state.decoder_positions == ref[b].state.decoder_positions
    assert eng.encoder_streams > eng.encoder_calls  # rounds were encoded in batches


@pytest.mark.parametrize("mode", ["group", "interleaved"])
def test_early_eos_rejected_in_a_batch_as_alone(make_model, codec, mode):
    """early_eos="wait" inside a batch: the stream that chose EOS too early hides that row and goes on with
    k + 1, exactly as it does alone (same logits, words and k), while the other stream is unaffected."""
    from .test_streaming import ScriptedSession, run_scripted

    model = make_model(160)
    waves = [noise_audio(2.0, seed=50), noise_audio(1.6, seed=51)]
    scripts = [codec.encode(SENTENCES[0]), codec.encode(SENTENCES[2])]
    alone = [run_scripted(ScriptedSession(model, scripts[b], eos_at=2 if b == 0 else None, mode=mode, k=2), waves[b])
             for b in range(2)]
    assert alone[0].state.k_extra >= 1  # row 2, and any EOS of the script that comes before the audio ends
    eng = BatchedStreams(model, 2, mode=mode, k=2, max_tokens_per_s=100.0)
    for b in range(2):  # the same scripted choices, on the engine's own sessions
        s = eng.sessions[b]
        s.script, s.eos_at, s.logits = list(scripts[b]) + [codec.eos_id], 2 if b == 0 else None, []
        s._choose = ScriptedSession._choose.__get__(s)
    serve_rounds(eng, waves, 2560)
    for b in range(2):
        eng.finish(b)
        s = eng.sessions[b]
        assert s.state.k_extra == alone[b].state.k_extra and s.words == alone[b].words
        assert (torch.stack(s.logits) - torch.stack(alone[b].logits)).abs().max().item() <= TOL


def _writes_and_private_uses(path, owner_names):
    """(line, text) of every write to a session's state (an assignment, or a list mutation, through ``.state`` or a
    name bound to it) and every ``_private`` attribute of a session (``self.sessions[...]`` or a name bound to one)."""
    import ast

    tree = ast.parse(path.read_text())
    sessions, states = set(owner_names), set()
    for node in ast.walk(tree):  # names bound to a session or to a session's state
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            text = ast.unparse(node.value)
            if text.startswith("self.sessions[") and not text.endswith(".state"):
                sessions.add(node.targets[0].id)
            if text.endswith(".state"):
                states.add(node.targets[0].id)

    def through_state(e) -> bool:
        text = ast.unparse(e)
        return ".state." in text + "." or text.split(".")[0] in states

    def is_session(e) -> bool:
        text = ast.unparse(e)
        return text.startswith("self.sessions[") and text.endswith("]") or text in sessions

    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        for t in targets:
            for e in t.elts if isinstance(t, ast.Tuple) else [t]:
                if isinstance(e, (ast.Attribute, ast.Subscript)) and through_state(e):
                    found.append((node.lineno, ast.unparse(node)))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in
                ("append", "pop", "extend", "clear", "insert") and through_state(node.func.value)):
            found.append((node.lineno, ast.unparse(node)))
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and is_session(node.value)):
            found.append((node.lineno, ast.unparse(node)))
    return sorted(set(found))


def test_batched_streams_drive_sessions_through_their_public_step_protocol():
    """BatchedStreams calls only public methods of StreamingSession (its step protocol) and writes nothing of a
    session's state: every write to a StreamState is the session's own."""
    from pathlib import Path

    import asr_stream.streaming.batched as batched

    assert _writes_and_private_uses(Path(batched.__file__), ()) == []


def test_each_counter_of_a_stream_state_has_one_writer():
    """Each counter of StreamState is assigned in one method of StreamingSession, the one its comment names, and in
    no other module of the package."""
    import ast
    import re
    from pathlib import Path

    import asr_stream
    from asr_stream.streaming import session

    src = Path(session.__file__).read_text()
    writers: dict[str, set[str]] = {c: set() for c in session.COUNTERS}
    for fn in ast.walk(ast.parse(src)):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
                for t in targets:
                    for e in t.elts if isinstance(t, ast.Tuple) else [t]:
                        if isinstance(e, ast.Attribute) and e.attr in writers:
                            writers[e.attr].add(fn.name)
    named = {c: re.search(rf"^    {c}: .*\[(\w+)\]$", src, re.M) for c in session.COUNTERS}
    assert {c: sorted(w) for c, w in writers.items()} == {c: [m.group(1)] for c, m in named.items() if m}
    others = [(p.name, c) for p in Path(asr_stream.__file__).parent.rglob("*.py") if p.name != "session.py"
              for c in session.COUNTERS if re.search(rf"\.state\.{c}\s*[+\-]?=[^=]", p.read_text())]
    assert others == []
