"""Training the bundled demo model (training/README.md): corpus, tokenizers, espeak-ng voices, GPU training,
export and test sets.

Run the steps from the repository root as modules, e.g. ``python -m training.corpus OUT.jsonl``; they
import each other as ``training.NAME``.
"""
