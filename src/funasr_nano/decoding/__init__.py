"""From segments to text: the scheduler that steps an engine, the guards, streamed text, word alignment."""
