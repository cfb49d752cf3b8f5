"""webdataset's ``WebDataset`` arguments in ``DriftDataset``'s terms, and the refusals of those
that mean nothing here, each with what to do instead.

Accepted: ``shardshuffle`` (a bool, or a shard buffer size: any size > 0 shuffles the whole
shard list; alias of ``shuffle``), ``handler`` (alias of ``on_error``), ``nodesplitter`` /
``workersplitter`` (``None`` for no split, or webdataset's ``split_by_node`` /
``split_by_worker`` / ``single_node_only``; other splitters are refused) and ``detshuffle``
(shuffles here are always deterministic by ``(seed, epoch)``) and ``resampled`` (shards drawn
with replacement, forever). Giving an argument and its alias
raises ``ValueError``, and so do ``repeat=True`` (use
``.with_epoch(n)``), ``cache_dir=`` and ``select_files=`` / ``rename_files=`` (profiles see
whole samples).

``translate`` takes ``DriftDataset``'s own arguments that have a webdataset alias and the extra
keywords it was given: webdataset's (``shardshuffle``, ``handler``, ``nodesplitter``,
``workersplitter``, ``detshuffle``, ``resampled``; refused: ``repeat=True``,
``cache_dir``, ``select_files``, ``rename_files``) and the gate settings that may be given one
by one instead of as ``GateOptions`` (``featurizer``, ``drift_config``, ``probe``,
``metadata``, ``profile_config``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .gate import GateOptions

NOT_GIVEN: Any = object()
WEBDATASET_ARGUMENTS = (
    "shardshuffle",
    "handler",
    "nodesplitter",
    "workersplitter",
    "resampled",
    "cache_dir",
    "repeat",
    "detshuffle",
    "select_files",
    "rename_files",
)
GATE_ARGUMENTS = ("featurizer", "drift_config", "probe", "metadata", "profile_config")


@dataclass
class Arguments:
    """``DriftDataset``'s arguments once webdataset's are translated."""

    shuffle: bool
    on_error: str | Callable[[Exception], bool]
    split_by_node: bool
    split_by_worker: bool
    single_node: bool  # nodesplitter=single_node_only: more than one rank is refused
    resampled: bool  # shards drawn with replacement, forever (webdataset's resampled=True)
    options: GateOptions


def translate(
    shuffle: bool | None,
    on_error: Any,
    split_by_node: bool | None,
    split_by_worker: bool | None,
    options: GateOptions | None,
    extra: dict[str, Any],
) -> Arguments:
    """Our arguments from ours and from webdataset's aliases in ``extra`` (never both)."""
    unknown = sorted(set(extra) - set(WEBDATASET_ARGUMENTS) - set(GATE_ARGUMENTS))
    if unknown:
        raise TypeError(f"DriftDataset() got an unexpected keyword argument {unknown[0]!r}")
    refuse_unsupported(extra)
    shardshuffle = extra.get("shardshuffle")
    handler = extra.get("handler")
    nodesplitter = extra.get("nodesplitter", NOT_GIVEN)
    workersplitter = extra.get("workersplitter", NOT_GIVEN)
    return Arguments(
        shuffle=_one_of(
            "shuffle", shuffle, "shardshuffle", shardshuffle, _shard_shuffle(shardshuffle), True
        ),
        on_error=_one_of("on_error", on_error, "handler", handler, handler, "raise"),
        split_by_node=_one_of(
            "split_by_node",
            split_by_node,
            "nodesplitter",
            nodesplitter,
            _splits(nodesplitter, "node"),
            True,
        ),
        split_by_worker=_one_of(
            "split_by_worker",
            split_by_worker,
            "workersplitter",
            workersplitter,
            _splits(workersplitter, "worker"),
            True,
        ),
        single_node=_splitter_name(nodesplitter) == "single_node_only",
        resampled=bool(extra.get("resampled", False)),
        options=gate_options(options, extra),
    )


def gate_options(options: GateOptions | None, extra: dict[str, Any]) -> GateOptions:
    """``options`` with the gate settings given one by one (``probe=64``...); not both."""
    given = {name: extra[name] for name in GATE_ARGUMENTS if name in extra}
    if options is None:
        return GateOptions(**given)
    if not isinstance(options, GateOptions):
        raise ValueError(f"options={options!r}: give a driftloader.GateOptions")
    if given:
        raise ValueError(
            f"options= and {', '.join(f'{k}=' for k in given)} both given: put "
            f"{'/'.join(given)} in GateOptions(...)"
        )
    return dataclasses.replace(options)


def _one_of(name: str, ours: Any, alias: str, given: Any, theirs: Any, default: Any) -> Any:
    """Our argument or its webdataset alias (never both), else ``default``; ``theirs`` is the
    alias's value ``given`` in our terms, None when it was not given."""
    if ours is not None and theirs is not None:
        raise ValueError(f"{name}={ours!r} and {alias}={given!r} both given; pass only one")
    return ours if ours is not None else theirs if theirs is not None else default


def _shard_shuffle(shardshuffle: bool | int | None) -> bool | None:
    """webdataset's ``shardshuffle`` (a bool or a shard buffer size) as our ``shuffle``: we
    always shuffle the whole shard list by ``(seed, epoch)``, so any size > 0 shuffles."""
    if shardshuffle is None or isinstance(shardshuffle, bool):
        return shardshuffle
    if isinstance(shardshuffle, int) and shardshuffle >= 0:
        return shardshuffle > 0
    raise ValueError(f"shardshuffle={shardshuffle!r}; use a bool or a shard buffer size >= 0")


def _splitter_name(fn: Any) -> str | None:
    """The name of one of webdataset's own shard splitters, else None."""
    module = getattr(fn, "__module__", None) or ""
    if module.split(".")[0] == "webdataset" and callable(fn):
        return getattr(fn, "__name__", None)
    return None


def _splits(splitter: Any, kind: str) -> bool | None:
    """webdataset's ``nodesplitter`` / ``workersplitter`` as our ``split_by_node`` /
    ``split_by_worker``: None (no split) is False, its ``split_by_node`` /
    ``split_by_worker`` is True, its ``single_node_only`` is False (and more than one rank is
    refused when iterating); not given is None. Other callables are refused: we split shards
    by rank and worker ourselves, so that every shard is read once and resumes exactly."""
    if splitter is NOT_GIVEN:
        return None
    if splitter is None:
        return False
    name = _splitter_name(splitter)
    if name == f"split_by_{kind}":
        return True
    if kind == "node" and name == "single_node_only":
        return False
    raise ValueError(
        f"{kind}splitter={splitter!r}: driftloader splits shards by rank and DataLoader worker "
        f"itself; pass split_by_{kind}=True/False (or None, webdataset.split_by_{kind}) instead "
        "of a custom splitter"
    )


def refuse_unsupported(extra: dict[str, Any]) -> None:
    """Refuse webdataset's arguments that mean nothing here, saying what to do instead;
    ``detshuffle`` is accepted (shuffles here are always deterministic by (seed, epoch))."""
    if extra.get("repeat"):
        raise ValueError(
            "repeat=True (the shard list forever) is not supported: use .with_epoch(n) for a "
            "fixed number of items per epoch, repeating the shards in a new order"
        )
    given = [name for name in ("select_files", "rename_files") if extra.get(name) is not None]
    if given:
        raise ValueError(
            f"{'/'.join(given)}=: driftloader profiles whole samples as they are stored, so "
            "profiles from training and from `driftloader profile` agree; drop or rename fields "
            "after reading instead: .map_dict(...), .rename(...), .to_tuple(...)"
        )
    cache_dir = extra.get("cache_dir")
    if cache_dir is not None:
        raise ValueError(
            f"cache_dir={cache_dir!r}: driftloader does not cache shards locally, it streams "
            "them from storage (retrying and resuming interrupted reads); drop cache_dir=, or "
            "copy the shards to local disk and pass their paths"
        )
