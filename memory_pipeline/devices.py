"""The torch device 'auto' means, one rule for the embedder and the trainer alike."""

from __future__ import annotations


def resolve_device(device: str) -> str:
    """'auto' picks CUDA, then Apple MPS, then CPU; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"
