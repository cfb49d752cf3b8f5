"""``EmbeddingFeaturizer``: a user's torch module, run in batches, whose embedding vectors are
sketched like any vector field (elements when narrow, always the norm and joint projections).

This module imports torch; ``driftloader.features`` imports it only when ``EmbeddingFeaturizer``
is asked for, so profiling with the default featurizer never pays for torch.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from driftloader.features.arrays import element_features
from driftloader.features.base import (
    BatchBuilder,
    FeatureBatch,
    as_bytes,
    callable_identity,
    check_int,
    decode_all,
)
from driftloader.features.featurizers import Featurizer
from driftloader.features.fields import DECODERS, decoder_name, default_kind
from driftloader.features.joint import JointOptions, project


def _decode_image(raw: Any) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(as_bytes(raw))) as img:
        return img.convert("RGB")


def _default_transform(value: Any) -> torch.Tensor:
    """Arrays as float32 tensors; PIL images as CHW float32 in [0, 1]."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, dtype=np.float32))
    if hasattr(value, "getbands"):
        array = np.asarray(value, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()
    raise TypeError(f"no default transform for {type(value).__name__}; pass transform=")


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of the module's parameters and buffers (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EmbeddingFeaturizer(Featurizer):
    """Embeds ``field`` with ``model`` and sketches the vectors.

    Each present value is decoded by the field's default rule (images as RGB PIL images,
    ``.npy`` as arrays, text as str), passed through ``transform`` (default: arrays as float32
    tensors, images as CHW float32 in [0, 1]), stacked ``batch_size`` at a time and run through
    ``model`` under ``torch.no_grad()`` in eval mode, on ``device`` (default: CUDA when there is
    one and this is not a DataLoader worker, else CPU). Features, ``name`` = ``<field>.emb``:
    ``<name>[i]`` per dimension when there are at most ``max_vector``, ``<name>.norm``, and
    ``joint:<name>/dir<j>`` projections (``joint``). A value that fails to decode or transform
    counts one error. The fingerprint hashes the model's class and weights, the transform and
    the options; weights come from the user, nothing is downloaded.

    >>> import torch
    >>> f = EmbeddingFeaturizer(torch.nn.Flatten(), field="x.npy")
    """

    def __init__(
        self,
        model: torch.nn.Module,
        field: str,
        transform: Callable[[Any], Any] | None = None,
        batch_size: int = 64,
        *,
        device: str | None = None,
        max_vector: int = 16,
        joint: JointOptions | Mapping[str, Any] | None = JointOptions(k=16),  # noqa: B008
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {model!r}")
        if not isinstance(field, str) or not field or field.startswith("__"):
            raise ValueError(f"bad field name {field!r}")
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable, got {transform!r}")
        self.model = model
        self.field = field
        self.transform = transform
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.device = device
        self.max_vector = check_int("max_vector", max_vector, 0)
        self.joint = JointOptions.from_dict(joint) if isinstance(joint, Mapping) else joint
        self.weights = weights_digest(model)
        self.errors = 0

    def describe(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "model": callable_identity(self.model),
            "weights": self.weights,
            "transform": None if self.transform is None else callable_identity(self.transform),
            "max_vector": self.max_vector,
            "joint": None if self.joint is None else self.joint.to_dict(),
        }

    def _device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        in_worker = torch.utils.data.get_worker_info() is not None
        return torch.device("cuda" if torch.cuda.is_available() and not in_worker else "cpu")

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        return self.run(samples, self._build)

    def _inputs(self, batch: BatchBuilder) -> list[Any]:
        raws = [s.get(self.field) for s in batch.samples]
        kind = default_kind(self.field)
        decoder = (
            _decode_image if kind == "image" else DECODERS[decoder_name(self.field, kind or "text")]
        )
        values = decode_all(batch, raws, decoder)
        return decode_all(batch, values, self.transform or _default_transform)

    def _embed(self, batch: BatchBuilder, tensors: list[Any], rows_at: list[int]) -> np.ndarray:
        """(len(tensors), width) float64 embeddings; a model error names the chunk's first sample."""
        device = self._device()
        model = self.model.to(device).eval()
        outputs = []
        with torch.no_grad():
            for start in range(0, len(tensors), self.batch_size):
                try:
                    chunk = torch.stack(
                        [torch.as_tensor(t) for t in tensors[start : start + self.batch_size]]
                    )
                    out = model(chunk.to(device))
                except Exception as e:
                    message = f"embedding model on field {self.field!r} failed: {e!r}"
                    raise batch.fail(rows_at[start], message) from e
                outputs.append(out.detach().reshape(out.shape[0], -1).float().cpu().numpy())
        return np.concatenate(outputs).astype(np.float64)

    def _build(self, batch: BatchBuilder) -> None:
        inputs = self._inputs(batch)
        rows_at = [i for i, v in enumerate(inputs) if v is not None]
        if not rows_at:
            return
        embedded = self._embed(batch, [inputs[i] for i in rows_at], rows_at)
        name = f"{self.field}.emb"
        data = np.zeros((embedded.shape[1], batch.n))
        mask = np.ones((embedded.shape[1], batch.n), dtype=bool)
        data[:, rows_at] = embedded.T
        mask[:, rows_at] = False
        batch.numeric(f"{name}.norm", self.field, np.sqrt((data**2).sum(axis=0)), mask[0])
        if data.shape[0] <= self.max_vector:
            element_features(batch, name, self.field, data, mask, self.joint)
        elif self.joint is not None:
            project(batch, self.joint, name, data.T, mask.T)
