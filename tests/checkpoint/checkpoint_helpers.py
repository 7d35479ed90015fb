"""Shared pieces of the checkpoint tests (tests/checkpoint/): a copy of the tiny hub directory to damage,
its state dict, the one-line ``ModelLoadError`` check, and the corruptions (overwrite a file, edit
``Qwen3-0.6B/config.json`` or ``config.yaml``) that the parametrized cases apply."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import funasr_nano
from funasr_nano.errors import ModelLoadError


def copy_model_dir(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("reference.pt"))
    return target


def official_state(model_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(model_dir / "model.pt", weights_only=True)["state_dict"]


def expect_load_error(model_dir: Path | str, *fragments: str) -> str:
    with pytest.raises(ModelLoadError) as info:
        funasr_nano.load_model(model_dir, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


# --- corruptions: each returns a function that damages a copied model directory ----------------------


DROP = object()
RANDOM_BYTES = bytes(range(256)) * 8  # not UTF-8, not YAML, not JSON


def write_file(relative: str, data: bytes | str) -> object:
    def corrupt(model_dir: Path) -> None:
        path = model_dir / relative
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")

    return corrupt


def edit_json(**changes: object) -> object:
    def corrupt(model_dir: Path) -> None:
        path = model_dir / "Qwen3-0.6B" / "config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        for key, value in changes.items():
            if value is DROP:
                config.pop(key, None)
            else:
                config[key] = value
        path.write_text(json.dumps(config), encoding="utf-8")

    return corrupt


def edit_yaml(section: str, **changes: object) -> object:
    def corrupt(model_dir: Path) -> None:
        path = model_dir / "config.yaml"
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        if changes:
            config[section].update(changes)
        else:
            config[section] = "not a mapping"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")

    return corrupt
