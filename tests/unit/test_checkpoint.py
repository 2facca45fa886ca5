"""The one checkpoint format: round trips, kinds, and errors that name the file at fault."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from torch import nn

from workbench.checkpoint import (
    FORMAT,
    json_safe,
    load_into,
    read_checkpoint,
    read_checkpoint_doc,
    save_checkpoint,
)
from workbench.errors import CheckpointError, ConfigError


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_module_round_trip_with_its_config(tmp_path):
    a = net()
    a[1].running_mean.add_(2.0)
    folder = save_checkpoint(tmp_path / "ck", a, kind="test", model_config={"hidden": 3}, extra={"epoch": 1})
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]  # no temp files
    tensors, doc = read_checkpoint(folder, kind="test")
    assert doc == {"format": FORMAT, "kind": "test", "model_config": {"hidden": 3}, "extra": {"epoch": 1},
                   "aliases": {}}
    b = net(seed=1)
    load_into(b, tensors, folder / "model.safetensors")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_tied_tensors_are_stored_once_and_restored_through_aliases(tmp_path):
    shared = torch.randn(3, 2)
    folder = save_checkpoint(tmp_path, {"a": shared, "b": shared, "c": torch.ones(1)}, kind="t", model_config={})
    tensors, doc = read_checkpoint(folder)
    assert set(tensors) == {"a", "c"} and doc["aliases"] == {"b": "a"}

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("a", torch.zeros(3, 2))
            self.register_buffer("b", torch.zeros(3, 2))
            self.register_buffer("c", torch.zeros(1))

    m = Tied()
    load_into(m, tensors, folder / "model.safetensors", aliases=doc["aliases"])
    assert torch.equal(m.b, shared) and torch.equal(m.a, shared)


def test_load_into_names_the_file_and_the_tensor(tmp_path):
    source = tmp_path / "model.safetensors"
    state = net().state_dict()
    wider = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    with pytest.raises(CheckpointError) as err:
        load_into(wider, state, source)
    assert str(source) in str(err.value) and "'0.weight'" in str(err.value)
    assert "(3, 4)" in str(err.value) and "(5, 4)" in str(err.value)
    bigger = nn.Sequential(*net(), nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint \['3.bias', '3.weight'\]"):
        load_into(bigger, state, source)
    load_into(bigger, state, source, allow_missing=("3.",))  # e.g. a frozen backbone reloaded elsewhere
    with pytest.raises(CheckpointError, match=r"not in the model \['extra'\]"):
        load_into(net(), {**state, "extra": torch.zeros(1)}, source)
    load_into(bigger, state, source, strict=False)


def test_read_errors_name_the_file(tmp_path):
    folder = save_checkpoint(tmp_path / "ck", net(), kind="fusion", model_config={})
    doc_path, weights = folder / "model.json", folder / "model.safetensors"
    with pytest.raises(CheckpointError, match="checkpoint folder .*nope does not exist"):
        read_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match=r"model.json: a 'fusion' checkpoint, expected 'ranker.bpr' or 'ranker.x'"):
        read_checkpoint_doc(folder, kind=("ranker.bpr", "ranker.x"))
    good_doc, good_weights = doc_path.read_text(), weights.read_bytes()

    weights.write_bytes(good_weights[: len(good_weights) - 20])
    with pytest.raises(CheckpointError, match=r"ck/model.safetensors .*not a valid safetensors file \(truncated"):
        read_checkpoint(folder)
    weights.write_bytes(pickle.dumps({"w": [1]}))  # a pickle is refused, never unpickled
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        read_checkpoint(folder)
    weights.write_bytes(good_weights)

    doc_path.write_text("{oops")
    with pytest.raises(CheckpointError, match=r"ck/model.json: not valid JSON"):
        read_checkpoint(folder)
    doc_path.write_text(json.dumps({**json.loads(good_doc), "format": "other/2"}))
    with pytest.raises(CheckpointError, match=r"model.json: format 'other/2', expected 'workbench.checkpoint/1'"):
        read_checkpoint(folder)
    doc_path.unlink()
    with pytest.raises(CheckpointError, match=r"ck/model.json: missing; expected the checkpoint document"):
        read_checkpoint(folder)
    (folder / "config.json").write_text(good_doc)  # the layout before the one format
    with pytest.raises(CheckpointError, match=r"config.json: written by an older workbench.*re-run notebook 02"):
        read_checkpoint(folder)
    weights.unlink()
    (folder / "config.json").unlink()
    doc_path.write_text(good_doc)
    with pytest.raises(CheckpointError, match=r"no weights \(model.safetensors missing"):
        read_checkpoint(folder)


def test_config_must_be_json_and_nan_becomes_none(tmp_path):
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        save_checkpoint(tmp_path, net(), kind="t", model_config={"f": object()})
    with pytest.raises(ConfigError, match="no NaN"):
        save_checkpoint(tmp_path, net(), kind="t", model_config={}, extra={"loss": float("nan")})
    assert not (tmp_path / "model.safetensors").exists()  # refused before anything is written
    assert json_safe({"a": [1.0, float("inf")], "b": (float("nan"), "x")}) == {"a": [1.0, None], "b": [None, "x"]}
