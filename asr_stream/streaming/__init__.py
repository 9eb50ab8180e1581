"""Streaming: a wait-k policy that returns typed actions, and the session that runs it on one KV cache."""

from .defaults import stream_config_for
from .policy import Action, wait_k_action
from .session import StreamingSession, Word

__all__ = ["Action", "wait_k_action", "StreamingSession", "Word", "stream_config_for"]
