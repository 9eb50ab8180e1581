"""asr_stream.streaming.driver: the one push loop of transcribe, mic, eval and the per-client server engine.

The sessions are real (the tiny test model); where a test needs a signal or an error at a given step, a thin
wrapper around the real session sends it, and the words are compared with the session pushed by hand.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from asr_stream.streaming import StreamingSession
from asr_stream.streaming.driver import Driver, drive, paced

from ..conftest import noise_audio

SETTINGS = dict(mode="group", k=2, phi=0.0)


def by_hand(model, wave: np.ndarray, block: int = 1600) -> list[tuple[str, float]]:
    s = StreamingSession(model, **SETTINGS)
    for i in range(0, len(wave), block):
        s.push(wave[i : i + block])
    s.finish()
    return [(w.text, w.time_ms) for w in s.words]


def pieces(wave: np.ndarray, block: int = 1600) -> list[np.ndarray]:
    return [wave[i : i + block] for i in range(0, len(wave), block)]


class Clock:
    """Seconds that move only when someone sleeps."""

    def __init__(self) -> None:
        self.t, self.sleeps = 50.0, []

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.sleeps.append(dt)
        self.t += dt


class Interrupting:
    """A real session whose push number ``at`` receives SIGINT while it runs (as Ctrl-C would), and records when
    each step ended."""

    def __init__(self, session, at: int) -> None:
        self.session, self.at, self.pushes, self.finished_after = session, at, 0, None

    def push(self, x):
        self.pushes += 1
        if self.pushes == self.at:
            os.kill(os.getpid(), signal.SIGINT)  # delivered now, in the middle of this step
        return self.session.push(x)

    def finish(self):
        self.finished_after = self.pushes
        return self.session.finish()


def test_drive_gives_the_words_of_the_session_pushed_by_hand_with_their_compute_times(make_model):
    model = make_model(160)
    wave = noise_audio(2.5, seed=5)
    got: list = []
    blocks = pieces(wave)
    blocks.insert(3, np.zeros(0, dtype=np.float32))  # an empty block is no step
    d = drive(StreamingSession(model, **SETTINGS), (b.astype(np.float64) for b in blocks), got.extend)
    want = by_hand(model, wave)
    assert want and [(w.text, w.time_ms) for w in d.words] == want == [(w.text, w.time_ms) for w in got]
    assert len(d.compute_at_ms) == len(d.words) and d.compute_at_ms == sorted(d.compute_at_ms)
    assert 0 < d.compute_at_ms[-1] <= d.compute_s * 1000.0 and not d.interrupted


def test_a_ctrl_c_during_a_step_waits_for_its_words_then_the_stream_is_finished_and_it_is_raised(make_model):
    model = make_model(160)
    wave = noise_audio(2.5, seed=6)
    session = Interrupting(StreamingSession(model, **SETTINGS), at=5)
    got: list = []
    with pytest.raises(KeyboardInterrupt):
        drive(session, pieces(wave), got.extend)
    assert session.pushes == 5 and session.finished_after == 5  # step 5 ran whole, no sixth, then finish()
    assert [(w.text, w.time_ms) for w in got] == by_hand(model, wave[: 5 * 1600])  # every word of what was heard


def test_keep_on_interrupt_ends_the_loop_as_the_end_of_the_audio_would(make_model):
    model = make_model(160)
    wave = noise_audio(2.5, seed=6)
    session = Interrupting(StreamingSession(model, **SETTINGS), at=5)
    d = drive(session, pieces(wave), keep_on_interrupt=True)
    assert d.interrupted and session.finished_after == 5
    assert [(w.text, w.time_ms) for w in d.words] == by_hand(model, wave[: 5 * 1600])


def test_the_source_is_closed_before_the_last_steps_and_an_error_raised_after_them(make_model):
    model = make_model(160)
    wave = noise_audio(2.0, seed=7)
    events: list[str] = []

    class Watched:
        def __init__(self) -> None:
            self.session, self.pushes = StreamingSession(model, **SETTINGS), 0

        def push(self, x):
            self.pushes += 1
            if self.pushes == 7:
                raise RuntimeError("a bad step")  # before the session took the block
            return self.session.push(x)

        def finish(self):
            events.append("finish")
            return self.session.finish()

    def source():
        try:
            yield from pieces(wave)
        finally:
            events.append("closed")  # a microphone stops here

    w = Watched()
    with pytest.raises(RuntimeError, match="a bad step"):
        drive(w, source())
    assert events == ["closed", "finish"]  # the source stopped before the last decoding steps
    assert [(x.text, x.time_ms) for x in w.session.words] == by_hand(model, wave[: 6 * 1600])


def test_an_error_from_the_source_keeps_what_came_before_it(make_model):
    """A bad block halfway (a decoding error, NaN samples): the words of the audio before it are decoded, then the
    error is raised."""
    model = make_model(160)
    wave = noise_audio(2.0, seed=7)

    def source():
        yield from pieces(wave)[:6]
        raise OSError("bad block")

    got: list = []
    with pytest.raises(OSError, match="bad block"):
        drive(StreamingSession(model, **SETTINGS), source(), got.extend)
    assert [(x.text, x.time_ms) for x in got] == by_hand(model, wave[: 6 * 1600])


def test_realtime_releases_each_block_when_its_first_sample_would_have_been_heard():
    clock = Clock()
    sizes = [1600, 800, 3200, 1600]  # 100, 50, 200, 100 ms
    released = []
    for b in paced((np.zeros(n, dtype=np.float32) for n in sizes), clock=clock, sleep=clock.sleep):
        released.append((round(clock.t - 50.0, 6), b.size))
        if b.size == 3200:
            clock.t += 0.5  # the consumer falls behind by 0.5 s: the next block comes at once, the schedule holds
    assert released == [(0.0, 1600), (0.1, 800), (0.15, 3200), (0.65, 1600)]
    assert clock.sleeps == pytest.approx([0.1, 0.05])


@pytest.mark.parametrize("guard", [True, False])
def test_only_the_guard_holds_a_ctrl_c_until_the_step_is_done(make_model, guard):
    """guard=False (the server's engine, whose signals belong to its event loop): the signal interrupts the step
    before the session has its block; guarded, the session takes the block whole and then the signal is raised."""
    model = make_model(160)
    session = Interrupting(StreamingSession(model, **SETTINGS), at=2)
    d = Driver(session, guard=guard)
    d.push(noise_audio(0.1))
    with pytest.raises(KeyboardInterrupt):
        d.push(noise_audio(0.1, seed=1))
    assert session.session.state.samples_in == (3200 if guard else 1600)
