"""driftloader: a drop-in WebDataset loader that keeps data-quality sketches per shard and version."""

from __future__ import annotations

__version__ = "0.1.0"
