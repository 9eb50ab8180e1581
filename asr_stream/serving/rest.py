"""``POST /v1/audio/transcriptions``: an OpenAI-style upload, decoded by the same engine as the live streams.

The request is ``multipart/form-data`` as OpenAI's API takes it: ``file`` (any format ``transcribe`` reads), ``model``
(required, any value: the server has one model), ``response_format`` (json, text, srt, vtt, verbose_json), ``language``
(English only), ``prompt`` (a context list: words and phrases separated by commas, read by a model trained with context
lists, refused with 400 by one trained without; blank: none), ``temperature`` (0 only: decoding is
greedy), ``timestamp_granularities[]`` (accepted: verbose_json always has segments and words), ``stream`` (false only).
Bad requests get OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``, with a one-line message.

The file is written to a temporary file as it arrives (at most ``--max-upload-mb``: 413 once passed; at most
``2 x --max-uploads`` requests at once are received, checked or decoded, so disk use is bounded, and at most
``--max-uploads`` of them from one address unless ``--max-per-address`` is 0), checked as audio
before it takes a slot, then fed to the engine like a client sending faster than real time: one share per tick
beside the live streams, read on only while at most ``--max-backlog-s`` of it waits (:meth:`Server.feed_upload`), in
one of ``--max-uploads`` slots. So an upload costs each live stream at most one extra row of one share per tick, and
its memory is bounded like a live connection's. Its segments are the server's (the endpointer ``transcribe`` uses);
the answer is rendered by the writers ``transcribe --format`` uses.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Optional

from aiohttp import BodyPartReader, web

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
FIELDS = ("file", "model", "response_format", "language", "prompt", "temperature", "timestamp_granularities[]",
          "timestamp_granularities", "stream")
MAX_FIELD_BYTES = 1 << 16
"""Largest form field other than ``file``."""
CHUNK = 1 << 16
BODY_IDLE_S = 30.0
"""A body from which nothing arrives for this long is abandoned (408): a client that stops sending frees its place."""
IN_FLIGHT = 2
"""Uploads being received, checked or decoded at once, per ``--max-uploads``: a body that arrives slowly holds no engine
slot, but its temporary file (up to ``--max-upload-mb``) is on disk; one more gets 429 before its body is read."""


class RequestError(Exception):
    """A request the endpoint refuses: its HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[dict] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_response(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                   headers: Optional[dict] = None) -> web.Response:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return web.json_response({"error": {"message": message.splitlines()[0] if message else "", "type": kind,
                                        "param": param, "code": code}}, status=status, headers=headers)


def _mb(n: float) -> str:
    return f"{n:g} MB"


async def read_form(request: web.Request, max_bytes: int, folder: Path) -> tuple[dict, Optional[tuple[Path, str, int]]]:
    """The form's fields (``timestamp_granularities[]`` as a list, the others as strings) and its file, written to
    ``folder`` as it arrives: (path, the client's file name, bytes). RequestError for everything malformed."""
    if request.content_type != "multipart/form-data":
        raise RequestError(400, f"expected a multipart/form-data body (got {request.content_type or 'none'}) with the "
                                "audio in a field named file", code="invalid_content_type")
    if request.content_length is not None and request.content_length > max_bytes + MAX_FIELD_BYTES * len(FIELDS):
        raise RequestError(413, f"request body of {request.content_length} bytes is over the upload limit of "
                                f"{_mb(max_bytes / 1e6)} (--max-upload-mb)", param="file", code="file_too_large")
    fields: dict = {}
    upload = None
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            name = getattr(part, "name", None)
            if not isinstance(part, BodyPartReader) or name not in FIELDS:
                raise RequestError(400, f"unknown form field {name!r} (expected {', '.join(FIELDS[:-2])})", param=name,
                                   code="unknown_parameter")
            if name == "file":
                if upload is not None:
                    raise RequestError(400, "more than one file field: send one file per request", param="file")
                path = folder / "upload"
                size = 0
                with open(path, "wb") as f:
                    while chunk := await _chunk(part):
                        size += len(chunk)
                        if size > max_bytes:
                            raise RequestError(413, f"file is over the upload limit of {_mb(max_bytes / 1e6)} "
                                                    "(--max-upload-mb)", param="file", code="file_too_large")
                        f.write(chunk)
                upload = (path, Path(part.filename or "upload").name, size)
                continue
            value = bytearray()
            while chunk := await _chunk(part):
                value += chunk
                if len(value) > MAX_FIELD_BYTES:
                    raise RequestError(400, f"form field {name} is over {MAX_FIELD_BYTES} bytes", param=name)
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(400, f"form field {name} is not UTF-8 text", param=name) from None
            if name.startswith("timestamp_granularities"):
                fields.setdefault("timestamp_granularities", []).append(text)
            elif name in fields:
                raise RequestError(400, f"form field {name} given twice", param=name)
            else:
                fields[name] = text
    except RequestError:
        raise
    except (ValueError, AssertionError, asyncio.IncompleteReadError, ConnectionError) as e:  # aiohttp's parser
        raise RequestError(400, f"malformed multipart body: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                           code="invalid_multipart") from None
    return fields, upload


async def _chunk(part) -> bytes:
    try:
        return await asyncio.wait_for(part.read_chunk(CHUNK), BODY_IDLE_S)
    except asyncio.TimeoutError:
        raise RequestError(408, f"nothing of the request body arrived for {BODY_IDLE_S:g} s: upload abandoned",
                           code="timeout") from None


def check_fields(fields: dict) -> str:
    """The response format, after checking every field; RequestError naming the first bad one."""
    if not fields.get("model"):
        raise RequestError(400, "you must provide a model parameter (any name: this server has one model)",
                           param="model", code="missing_parameter")
    fmt = fields.get("response_format", "json")
    if fmt not in FORMATS:
        raise RequestError(400, f"response_format must be one of {', '.join(FORMATS)}, got {fmt!r}",
                           param="response_format", code="invalid_value")
    lang = fields.get("language", "en").strip().lower()
    if not (lang in ("en", "english") or lang.startswith(("en-", "en_"))):
        raise RequestError(400, f"language {fields['language']!r} is not supported: this server transcribes English "
                                "only (en)", param="language", code="unsupported_language")
    if "temperature" in fields:
        try:
            t = float(fields["temperature"])
        except ValueError:
            t = None
        if t != 0.0:
            raise RequestError(400, f"temperature must be 0 (decoding is greedy), got {fields['temperature']!r}",
                               param="temperature", code="invalid_value")
    for g in fields.get("timestamp_granularities", []):
        if g not in ("word", "segment"):
            raise RequestError(400, f"timestamp_granularities must be word or segment, got {g!r}",
                               param="timestamp_granularities", code="invalid_value")
    if fields.get("stream", "false").lower() not in ("false", "0"):
        raise RequestError(400, "stream=true is not offered here: for words as they are decoded use the WebSocket "
                                "protocol (docs/protocol.md)", param="stream", code="unsupported_value")
    return fmt


def open_audio(path: Path, name: str, max_s: float):
    """The upload as an :class:`~asr_stream.audio.io.AudioFile` (errors name the client's file, not ours)."""
    from ..audio.io import AudioError, AudioFile

    try:
        audio = AudioFile(path)
    except AudioError as e:
        message = str(e).splitlines()[0].replace(str(path), name)
        raise RequestError(400, f"not an audio file this server can decode: {message}", param="file",
                           code="invalid_audio") from None
    seconds = audio.frames / audio.rate
    if seconds >= max_s:
        raise RequestError(400, f"{name}: {seconds:.1f} s of audio, at or over the limit of {max_s:g} s "
                                "(--max-session-s)", param="file", code="audio_too_long")
    return audio


def prompt_context(server, fields: dict) -> Optional[tuple[str, ...]]:
    """The ``prompt`` field as a context list (words and phrases separated by commas or new lines; blank: none), checked
    against the model; RequestError 400 when the model cannot read it (trained without context, or too long)."""
    from ..context import parse_context

    text = fields.get("prompt", "")
    if not text.strip():
        return None
    try:
        phrases = parse_context(text, "prompt")
        server.check_context(phrases)
    except ValueError as e:
        raise RequestError(400, f"prompt (a context list of words and phrases): {e}", param="prompt",
                           code="invalid_value") from None
    return phrases


async def decode(server, audio, name: str, context: Optional[tuple[str, ...]] = None) -> tuple[list, list[str], float]:
    """Feed ``audio`` through the engine (with ``context``, the prompt's list); its segments, the warnings ``transcribe``
    gives, seconds of audio."""
    from ..audio.io import SAMPLE_RATE, AudioError, LevelCheck
    from ..streaming.segment import unheard
    from ..transcript import repetition_warning, unheard_warning

    if server.draining:
        raise RequestError(503, "the server is going away (shutting down): send it again (to another replica)",
                           code="shutting_down", headers={"Retry-After": "1"})
    c = server.open_upload(context)
    if c is None:
        raise RequestError(429, f"busy: {server.limits.max_uploads} upload(s) or all {server.limits.max_clients} streams "
                                "are in use, try again later", code="busy", headers={"Retry-After": "1"})
    check = LevelCheck(audio.rate)
    failure: list[RequestError] = []

    async def produce() -> None:
        blocks = audio.blocks()  # about 10 s at a time, decoded in a worker thread
        try:
            while (x := await asyncio.to_thread(next, blocks, None)) is not None:
                check.push(x)
                if not await server.feed_upload(c, x):
                    return  # dropped (its error is in the queue), or cut at --max-session-s
            server.end_upload(c)
        except AudioError as e:
            failure.append(RequestError(400, f"not an audio file this server can decode: "
                                             f"{str(e).splitlines()[0].replace(str(audio.path), name)}",
                                        param="file", code="invalid_audio"))
            c.queue.put_nowait({"type": "failed"})

    producer = asyncio.create_task(produce())
    try:
        while True:
            ev = await c.queue.get()
            if ev["type"] == "failed":
                raise failure[0]
            if ev["type"] == "going_away":
                raise RequestError(503, "the server is going away (shutting down) before this upload was decoded: send "
                                        "it again (to another replica)", code="shutting_down", headers={"Retry-After": "1"})
            if ev["type"] == "error" and ev.get("fatal", True):
                raise RequestError(500, f"internal error: {ev['reason']}", code="internal_error")
            if ev["type"] == "error":  # the session limit (a header that under-declared the length)
                raise RequestError(400, f"{name}: over the limit of {server.limits.max_session_s:g} s of audio "
                                        "(--max-session-s)", param="file", code="audio_too_long")
            if ev["type"] == "eof":
                break
    finally:
        producer.cancel()
        server.drop(c)
    segs = c.segments or []
    warns = audio.warnings + check.warnings()
    said = unheard_warning(*unheard(segs))
    repeated = repetition_warning([w.text for s in segs for w in s.words])
    warns += [w for w in (said, repeated) if w]
    return segs, warns, c.samples_in / SAMPLE_RATE


def render(segs: list, warns: list[str], audio_s: float, fmt: str) -> web.Response:
    """The answer in ``fmt``, from the segments as ``transcribe`` renders them (text: its txt, one line a segment)."""
    from ..transcript import to_srt, to_txt, to_vtt, word_spans

    segments = [s.as_dict() for s in segs]
    text = " ".join(s["text"] for s in segments if s["text"])
    header = {"X-ASR-Stream-Warnings": json.dumps(warns)} if warns else None
    if fmt == "json":
        return web.json_response({"text": text, "warnings": warns})
    if fmt in ("text", "srt", "vtt"):
        body = {"text": to_txt, "srt": to_srt, "vtt": to_vtt}[fmt](segments)
        ctype = "text/vtt" if fmt == "vtt" else "text/plain"
        return web.Response(text=body, content_type=ctype, charset="utf-8", headers=header)
    words, out = [], []
    for s in segments:
        spans = word_spans(s) if s["text"] else []
        words += [{"word": w, "start": round(a / 1000, 3), "end": round(b / 1000, 3)} for w, a, b in spans]
        raw = s["text"].encode()
        out.append({"id": s["index"], "seek": 0, "start": round(s["start_ms"] / 1000, 3), "end": round(s["end_ms"] / 1000, 3),
                    "text": s["text"], "tokens": [], "temperature": 0.0, "avg_logprob": None,
                    "compression_ratio": round(len(raw) / len(zlib.compress(raw)), 3) if raw else None,
                    "no_speech_prob": None, "rule": s["rule"]})
    return web.json_response({"task": "transcribe", "language": "english", "duration": round(audio_s, 3), "text": text,
                              "segments": out, "words": words, "warnings": warns})


async def transcriptions(server, request: web.Request) -> web.StreamResponse:
    """The endpoint: form -> checks -> audio -> engine -> answer; every refusal in OpenAI's error shape."""
    lim = server.limits
    if lim.max_uploads == 0:
        return error_response(404, "uploads are turned off on this server (--max-uploads 0)", code="uploads_off")
    if server.receiving >= IN_FLIGHT * lim.max_uploads:  # bodies arriving slowly hold no slot but take disk space
        return error_response(429, f"busy: {server.receiving} uploads are being received or decoded, the most this "
                                   f"server takes at once (2 x --max-uploads), try again later", code="busy",
                              headers={"Retry-After": "1"})
    address = request.remote or "?"
    if not server.uploading.admit(address):  # one address does not take every place
        n = server.uploading.limit
        return error_response(429, f"busy: {n} upload{'s' if n > 1 else ''} from {address} "
                                   f"{'are' if n > 1 else 'is'} being received or decoded, the most one address may "
                                   "have (--max-uploads; --max-per-address 0 lifts it), try again later", code="busy",
                              headers={"Retry-After": "1"})
    server.receiving += 1
    folder = Path(tempfile.mkdtemp(prefix="asr-stream-upload-"))
    try:
        fields, upload = await read_form(request, int(lim.max_upload_mb * 1e6), folder)
        if upload is None:
            raise RequestError(400, "no file: send the audio in a form field named file", param="file",
                               code="missing_parameter")
        fmt = check_fields(fields)
        context = prompt_context(server, fields)
        path, name, size = upload
        if size == 0:
            raise RequestError(400, f"{name}: the file is empty", param="file", code="invalid_audio")
        audio = await asyncio.to_thread(open_audio, path, name, lim.max_session_s)
        segs, warns, audio_s = await decode(server, audio, name, context)
        return render(segs, warns, audio_s, fmt)
    except RequestError as e:
        return error_response(e.status, e.message, e.param, e.code, e.headers)
    except Exception as e:  # noqa: BLE001 - a bug: said in OpenAI's shape (the traceback goes to stderr)
        import traceback

        traceback.print_exc()
        return error_response(500, f"internal error: {type(e).__name__}: {e}", code="internal_error")
    finally:
        server.receiving -= 1
        server.uploading.leave(address)
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["FORMATS", "RequestError", "error_response", "transcriptions"]
