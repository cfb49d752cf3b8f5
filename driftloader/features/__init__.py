"""Featurizers: sample dicts -> batches of feature columns (numpy), with a stable fingerprint.

A featurizer takes a list of webdataset-style samples (``{"__key__", "__url__", ext: bytes}``)
and returns a ``FeatureBatch``: ``{name: Column}``, sorted by name, one entry per sample. One
module per feature kind: ``fields`` (inference, numbers, categories, JSON), ``arrays``, ``text``,
``images``, ``joint`` (random projections), ``embedding`` (a user's torch model); ``featurizers``
and ``spec`` put them together.

Default feature names (``DefaultFeaturizer``; the field type is the last dotted part of the
field name, so ``"x.npy"`` is an array and ``"cls"`` a label):

* arrays (``.npy``): ``<field>[i]`` per element (C order) when the array has ``<= max_vector``
  values, plus ``joint:<field>/dir<j>``, ``k`` = 8 seeded random unit projections of the vector
  (see ``joint``); else ``<field>.mean``, ``.std``, ``.min``, ``.max``, ``.size``;
* labels (``.cls``, ``.cls2``, ``.class``, ``.index``, ``.label``, ``.target``): categorical
  ``<field>`` (stripped text; integers normalised, ``"07"`` -> ``"7"``);
* JSON (``.json``): ``<field>.<key>`` and ``<field>.<key>.<sub>`` for one nested object level:
  numbers -> numeric, strings and bools (``"true"``/``"false"``) -> categorical, lists -> numeric
  ``<...>.len``; null and deeper objects are skipped. At most ``max_keys`` (128) names per field
  and shard; past that one ``FeatureWarning`` names the field and further keys go to
  ``<field>.other_keys`` (their count per sample) and ``<field>.other_keys.names`` (hashed tokens);
* text (``.txt``, ``.text``, ``.caption``, ``.title``): numeric ``<field>.len`` (characters),
  ``.words``, ``.alpha_ratio``, ``.digit_ratio``, ``.upper_ratio``, ``.space_ratio`` (0 for an
  empty text) and tokens ``<field>.tokens`` (the text);
* images (``.jpg .jpeg .png .webp .ppm .bmp``): by content, decoded small (see ``images``):
  ``<field>.bytes``, ``.width``, ``.height``, ``.aspect``, ``.area``, ``.brightness``,
  ``.contrast``, ``.red``, ``.green``, ``.blue``, ``.saturation``, ``.sharpness``, ``.quality``
  and categorical ``.mode``; ``decode_images=False`` keeps ``.bytes`` only.

Missing fields are masked (numeric) or ``None``; NaN and inf stay as values. Bytes that fail to
parse (including numbers too large for a float) make that sample's entries of the field missing
and add one to ``featurizer.errors``; nothing is ever unpickled. Column names depend only on the
samples of the batch (and, for a JSON field past its key cap, on the earlier batches of the same
shard), never on the process, so workers and ranks agree.
"""

from driftloader.features.arrays import SUMMARY_STATS
from driftloader.features.base import (
    ARRAY_EXTENSIONS,
    FEATURES_VERSION,
    IMAGE_EXTENSIONS,
    JSON_EXTENSIONS,
    LABEL_EXTENSIONS,
    TEXT_EXTENSIONS,
    Column,
    FeatureBatch,
    FeatureWarning,
    FeaturizeError,
    Kind,
    callable_identity,
    extension,
)
from driftloader.features.featurizers import (
    CallableFeaturizer,
    DefaultFeaturizer,
    FeatureOptions,
    Featurizer,
    featurizer_from,
)
from driftloader.features.fields import DEFAULT_MAX_KEYS, default_kind
from driftloader.features.images import IMAGE_STATS, ImageOptions
from driftloader.features.joint import (
    JointOptions,
    joint_labels,
    joint_name,
    joint_name_parts,
    joint_scales,
)
from driftloader.features.spec import SPEC_KINDS, FeatureSpec, SpecFeaturizer, featurizer_from_spec
from driftloader.features.text import TEXT_STATS
from driftloader.npy import load_npy


def __getattr__(name: str) -> object:
    if name == "EmbeddingFeaturizer":  # imported on use: it brings torch
        from driftloader.features.embedding import EmbeddingFeaturizer

        return EmbeddingFeaturizer
    raise AttributeError(f"module 'driftloader.features' has no attribute {name!r}")


__all__ = [
    "ARRAY_EXTENSIONS",
    "CallableFeaturizer",
    "Column",
    "DEFAULT_MAX_KEYS",
    "DefaultFeaturizer",
    "EmbeddingFeaturizer",
    "FEATURES_VERSION",
    "FeatureBatch",
    "FeatureOptions",
    "FeatureSpec",
    "FeatureWarning",
    "FeaturizeError",
    "Featurizer",
    "IMAGE_EXTENSIONS",
    "IMAGE_STATS",
    "ImageOptions",
    "JSON_EXTENSIONS",
    "JointOptions",
    "Kind",
    "LABEL_EXTENSIONS",
    "SPEC_KINDS",
    "SUMMARY_STATS",
    "SpecFeaturizer",
    "TEXT_EXTENSIONS",
    "TEXT_STATS",
    "callable_identity",
    "default_kind",
    "extension",
    "featurizer_from",
    "featurizer_from_spec",
    "joint_labels",
    "joint_name",
    "joint_name_parts",
    "joint_scales",
    "load_npy",
]
