"""Loading hub-layout directories: every checkpoint wrapper loads the same tensors, projections are fused
where the fused step runs, CTC extras are skipped quietly, the variant comes from the directory name,
the stop tokens from the config, and hub ids resolve through huggingface_hub (one line offline)."""

from __future__ import annotations

import warnings

import pytest
import torch
from checkpoint_helpers import DROP, copy_model_dir, edit_json, official_state

import funasr_nano
from funasr_nano.backends.torch import model as torch_model
from funasr_nano.checkpoint import load_state_dict, resolve_model_dir
from funasr_nano.config import read_config
from funasr_nano.errors import ModelLoadError


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


@pytest.mark.parametrize("fused_step", [False, True])
def test_projections_are_fused_at_load_exactly_where_the_fused_step_runs(official_tiny, baseline, monkeypatch,
                                                                        fused_step):
    monkeypatch.setattr(torch_model, "supports_fused_decode", lambda device, dtype: fused_step)
    config = read_config(official_tiny.model_dir)
    model = torch_model.FunASRNanoTorch.from_state_dict(config, baseline, torch.device("cpu"), torch.float32)
    for layer in model.llm.model.layers:
        assert (layer.self_attn.qkv_weight is not None) == fused_step
        assert (layer.mlp.gate_up_weight is not None) == fused_step
    assert model.llm.lm_head.weight is model.llm.model.embed_tokens.weight
    key = "llm.model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(model.llm.model.layers[0].self_attn.k_proj.weight, baseline[key])


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


# --- hub ids -------------------------------------------------------------------------------------------


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


def test_an_unknown_hub_is_a_usage_error():
    with pytest.raises(funasr_nano.UsageError, match="hub"):
        resolve_model_dir("FunAudioLLM/Fun-ASR-Nano-2512", hub="github")


# --- variant and stop tokens ----------------------------------------------------------------------------


def test_the_variant_is_guessed_from_the_directory_name_as_given(official_tiny, tmp_path):
    under_mlt_folder = copy_model_dir(official_tiny.model_dir, tmp_path / "pmlt" / "Fun-ASR-Nano-2512")
    assert funasr_nano.load_model(under_mlt_folder, device="cpu").config.variant == "nano"
    link = tmp_path / "Fun-ASR-MLT-Nano-link"
    link.symlink_to(under_mlt_folder, target_is_directory=True)
    assert funasr_nano.load_model(link, device="cpu").config.variant == "mlt"
    assert funasr_nano.load_model(link, device="cpu", variant="nano").config.variant == "nano"
    with pytest.raises(funasr_nano.UsageError, match="variant"):
        funasr_nano.load_model(link, device="cpu", variant="31")


def test_generation_stops_only_on_the_configs_eos_token(official_tiny, tmp_path):
    model = funasr_nano.load_model(official_tiny.model_dir, device="cpu")
    assert model.backend.engine.stop_ids == {151645}  # <|im_end|>; <|endoftext|> 151643 is not a stop
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    edit_json(eos_token_id=[151643, 151645])(model_dir)
    assert funasr_nano.load_model(model_dir, device="cpu").backend.engine.stop_ids == {151643, 151645}
    edit_json(eos_token_id=DROP)(model_dir)
    assert funasr_nano.load_model(model_dir, device="cpu").backend.engine.stop_ids == {151645}
