"""Pick an entropy coder backend by name: ``auto``, ``constriction`` or ``huffman``."""
from __future__ import annotations

from types import ModuleType

NAMES = ("constriction", "huffman")


def get(name: str = "auto") -> ModuleType:
    """The backend module for ``name``; ``auto`` prefers constriction, else Huffman."""
    from . import constriction_coder, huffman

    if name == "auto":
        return constriction_coder if constriction_coder.available() else huffman
    if name == "constriction":
        if not constriction_coder.available():
            raise RuntimeError("the constriction coder is not installed (pip install constriction); "
                               "use coder='huffman'")
        return constriction_coder
    if name == "huffman":
        return huffman
    raise ValueError(f"unknown coder {name!r}: choose auto, constriction or huffman")
