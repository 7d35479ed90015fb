"""Results out: transcripts, subtitles and JSON files."""
