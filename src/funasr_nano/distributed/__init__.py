"""Transcription of large collections on a Ray cluster (``pip install 'funasr-nano[ray]'``)."""

from .ray_job import DecodeOptions, JobSummary, ModelOptions, transcribe_collection

__all__ = ["DecodeOptions", "JobSummary", "ModelOptions", "transcribe_collection"]
