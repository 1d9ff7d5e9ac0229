"""The core's sentence chunker is `voice_common.sentences.SentenceChunker`: one set of
sentence rules for the core and the TTS service (which splits any client's text by them).
This module keeps the pipeline's import path."""

from voice_common.sentences import SentenceChunker

__all__ = ["SentenceChunker"]
