"""``asr-stream serve``: live streams over WebSocket, OpenAI-style uploads over HTTP, one model and one batched engine.

- :mod:`~asr_stream.serving.protocol`: the WebSocket protocol's start message and frames (no networking).
- :mod:`~asr_stream.serving.config`: :class:`ServerConfig`, the limits.
- :mod:`~asr_stream.serving.server`: :class:`Server`, the engine and the WebSocket sessions.
- :mod:`~asr_stream.serving.web`: the HTTP side (aiohttp, one port); :mod:`~asr_stream.serving.rest`: the upload
  endpoint.

``asr_stream.server`` and ``asr_stream.protocol`` stay importable (they re-export these).
"""
