"""Ids and text: the prompt, the language names, the CTC vocabulary."""
