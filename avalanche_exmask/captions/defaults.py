"""The default captioner and its instruction, importable without torch or transformers.

Kept apart from :mod:`avalanche_exmask.captions.generate` so that building the command line
parser (whose help shows them) imports nothing heavy.
"""
from __future__ import annotations

__all__ = ["DEFAULT_MODEL", "DEFAULT_PROMPT"]

#: The captioner of the paper (InstructBLIP, Flan-T5-XL language model).
DEFAULT_MODEL = "Salesforce/instructblip-flan-t5-xl"
#: One of InstructBLIP's captioning instructions.
DEFAULT_PROMPT = "Write a short description for the image."
