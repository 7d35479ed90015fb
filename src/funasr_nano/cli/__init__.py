"""The command line: transcribe, serve, convert."""
