"""Audio in: decoding and resampling files, speech detection (VAD), log-mel features."""
