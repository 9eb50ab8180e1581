"""``asr-stream serve``: live streams over WebSocket, OpenAI-style uploads over HTTP, one model and one batched engine.

- :mod:`~asr_stream.serving.protocol`: the WebSocket protocol's start message and frames (no networking).
- :mod:`~asr_stream.serving.config`: :class:`ServerConfig`, the limits.
- :mod:`~asr_stream.serving.server`: :class:`Server`, the engine and the WebSocket sessions.
- :mod:`~asr_stream.serving.web`: the HTTP side (aiohttp, one port); :mod:`~asr_stream.serving.rest`: the upload
  endpoint; :mod:`~asr_stream.serving.gate`: connections before their first request.
- :mod:`~asr_stream.serving.fairness`: a share per tick, the audio idle rule, counts per address.
- :mod:`~asr_stream.serving.client`: the client (``asr-stream client``, ``mic --url``, the benchmark).
- :mod:`~asr_stream.serving.replicas`: N replicas behind HAProxy.

``asr_stream.server`` and ``asr_stream.protocol`` stay importable (they re-export these); ``asr_stream.client`` and
``asr_stream.fairness`` too (deprecated aliases of the modules here).
"""
