"""The generic save / load / resume check (after torchdata's ``run_test_save_load_state``), run
over every stage and every policy by tests/test_stages.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import driftloader as dl


def norm(x: Any) -> Any:
    """A comparable form of a sample, tuple or collated batch."""
    if isinstance(x, dict):
        return tuple(sorted((k, norm(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(norm(v) for v in x)
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return ("array", norm(x.tolist()))
    return x


def decisions(ds: dl.DriftDataset) -> list[tuple]:
    return [(r["url"], r["action"], r["n"], r["epoch"]) for r in ds.drift_report()]


def saved(ds: dl.DriftDataset) -> dict:
    """``ds.state_dict()`` through JSON, as a checkpoint keeps it."""
    return json.loads(json.dumps(ds.state_dict()))


def run_test_save_load_state(make: Callable[[], dl.DriftDataset], midpoint: int) -> None:
    """Compare with an uninterrupted run of two epochs (items and drift decisions):

    * midpoint: stop after ``midpoint`` items of epoch 0, save; a fresh dataset (a restart)
      and the same object, loaded with the state, yield the rest of epoch 0, then epoch 1;
    * next epoch: a state saved when epoch 0 ended makes a fresh dataset yield epoch 1;
    * a state saved right after resuming resumes too.
    """
    whole = make()
    epoch0, decided0 = [norm(x) for x in whole], decisions(whole)
    epoch1, decided1 = [norm(x) for x in whole], decisions(whole)
    assert 0 <= midpoint <= len(epoch0)

    ds = make()
    it = iter(ds)
    head = [norm(next(it)) for _ in range(midpoint)]
    state = saved(ds)
    it.close()
    assert head == epoch0[:midpoint]
    for resumed in (make(), ds):  # a restart, and the same object
        resumed.load_state_dict(state)
        assert [norm(x) for x in resumed] == epoch0[midpoint:]
        assert decisions(resumed) == decided0
        assert [norm(x) for x in resumed] == epoch1
        assert decisions(resumed) == decided1

    ended = make()
    assert [norm(x) for x in ended] == epoch0
    restarted = make()
    restarted.load_state_dict(saved(ended))
    assert [norm(x) for x in restarted] == epoch1

    if midpoint < len(epoch0):
        once = make()
        once.load_state_dict(state)
        it = iter(once)
        assert norm(next(it)) == epoch0[midpoint]
        again = make()
        again.load_state_dict(saved(once))
        it.close()
        assert [norm(x) for x in again] == epoch0[midpoint + 1 :]
        assert decisions(again) == decided0
