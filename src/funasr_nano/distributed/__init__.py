"""Transcription of large collections on a Ray cluster (``pip install 'funasr-nano[ray]'``)."""

from ..options import TranscribeOptions
from .ray_job import JobSummary, ModelOptions, transcribe_collection

__all__ = ["JobSummary", "ModelOptions", "TranscribeOptions", "transcribe_collection"]
