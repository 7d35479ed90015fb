"""Loading hub-layout directories: checkpoint wrappers, CTC extras, hub ids and clear errors."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch

import funasr_nano
from funasr_nano.checkpoint import load_state_dict, read_config, resolve_model_dir
from funasr_nano.errors import ModelLoadError


def copy_model_dir(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("reference.pt"))
    return target


def official_state(model_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(model_dir / "model.pt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def baseline(official_tiny) -> dict[str, torch.Tensor]:
    return load_state_dict(official_tiny.model_dir)


@pytest.mark.parametrize("layout", ["flat", "state_dict", "model_state_dict", "model", "module_prefix"])
def test_checkpoint_layouts_load_identically(official_tiny, baseline, tmp_path, layout):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    state = official_state(official_tiny.model_dir)
    if layout == "module_prefix":
        saved: object = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    elif layout == "flat":
        saved = state
    else:
        saved = {layout: state, "epoch": 3}
    torch.save(saved, model_dir / "model.pt")
    loaded = load_state_dict(model_dir)
    assert loaded.keys() == baseline.keys()
    assert all(torch.equal(loaded[k], baseline[k]) for k in baseline)


def test_ctc_tensors_are_skipped_quietly(official_tiny, tmp_path, capfd):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    state = official_state(official_tiny.model_dir)
    state["ctc_decoder.linear1.weight"] = torch.zeros(128, 64)
    state["ctc.ctc_lo.weight"] = torch.zeros(60515, 8)
    torch.save({"state_dict": state}, model_dir / "model.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = funasr_nano.load_model(model_dir, device="cpu")
    assert not caught
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert not any(k.startswith("ctc") for k in model.backend.model.state_dict())


def test_full_size_defaults_and_variant_detection(official_tiny, tmp_path):
    config = read_config(official_tiny.model_dir)
    assert config.encoder.output_size == 64 and config.encoder.num_blocks == 3
    assert config.adaptor.attention_heads == 8 and config.llm.hidden_size == 64
    assert config.variant == "nano" and config.languages == ("中文", "英文", "日文")
    mlt = copy_model_dir(official_tiny.model_dir, tmp_path / "Fun-ASR-MLT-Nano-2512")
    assert read_config(mlt).variant == "mlt" and len(read_config(mlt).languages) == 31
    assert read_config(official_tiny.model_dir, variant="mlt").variant == "mlt"


def expect_load_error(model_dir: Path | str, *fragments: str) -> str:
    with pytest.raises(ModelLoadError) as info:
        funasr_nano.load_model(model_dir, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


def test_missing_directory(tmp_path):
    expect_load_error(tmp_path / "nope", "model directory not found", "local")


def test_missing_llm_folder(official_tiny, tmp_path):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    shutil.rmtree(model_dir / "Qwen3-0.6B")
    expect_load_error(model_dir, "Qwen3-0.6B")


def test_missing_model_pt(official_tiny, tmp_path):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    (model_dir / "model.pt").unlink()
    expect_load_error(model_dir, "no model.pt")


def test_truncated_checkpoint(official_tiny, tmp_path):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    data = (model_dir / "model.pt").read_bytes()
    (model_dir / "model.pt").write_bytes(data[: len(data) // 2])
    expect_load_error(model_dir, "truncated", "download it again")


def test_wrong_shapes(official_tiny, tmp_path):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    state = official_state(official_tiny.model_dir)
    state["audio_adaptor.linear1.weight"] = torch.zeros(7, 7, dtype=torch.bfloat16)
    torch.save({"state_dict": state}, model_dir / "model.pt")
    expect_load_error(model_dir, "audio_adaptor.linear1.weight", "shape")


def test_missing_tensors(official_tiny, tmp_path):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    state = official_state(official_tiny.model_dir)
    del state["audio_encoder.tp_norm.weight"]
    torch.save({"state_dict": state}, model_dir / "model.pt")
    expect_load_error(model_dir, "audio_encoder.tp_norm.weight")


def test_not_a_funasr_checkpoint(official_tiny, tmp_path):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, model_dir / "model.pt")
    expect_load_error(model_dir, "not a Fun-ASR-Nano checkpoint")


class Payload:
    """Any non-tensor object: weights_only loading must refuse it instead of unpickling."""


def test_arbitrary_pickles_are_refused(official_tiny, tmp_path):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    torch.save(
        {"state_dict": official_state(official_tiny.model_dir), "extra": Payload()}, model_dir / "model.pt"
    )
    expect_load_error(model_dir, "only weights_only")


def test_hub_id_without_network_gives_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(ModelLoadError) as info:
        resolve_model_dir("FunAudioLLM/Fun-ASR-Nano-2512")
    message = str(info.value)
    assert "FunAudioLLM/Fun-ASR-Nano-2512" in message and "local model directory" in message


def test_hub_id_downloads_through_huggingface_hub(monkeypatch, official_tiny):
    calls: list[tuple[str, dict]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: object) -> str:
        calls.append((repo_id, kwargs))
        if kwargs.get("local_files_only"):
            raise FileNotFoundError("not cached")
        return str(official_tiny.model_dir)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_model_dir("FunAudioLLM/Fun-ASR-Nano-2512") == official_tiny.model_dir
    assert resolve_model_dir("mlt") == official_tiny.model_dir  # short alias of the MLT hub id
    assert [c[0] for c in calls] == ["FunAudioLLM/Fun-ASR-Nano-2512"] * 2 + [
        "FunAudioLLM/Fun-ASR-MLT-Nano-2512"
    ] * 2
