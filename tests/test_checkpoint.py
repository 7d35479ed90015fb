"""Loading hub-layout directories: checkpoint wrappers, CTC extras, hub ids and clear errors."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml

import funasr_nano
from funasr_nano.backends.torch import model as torch_model
from funasr_nano.checkpoint import load_state_dict, resolve_model_dir
from funasr_nano.config import read_config
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


# --- every broken model directory is one ModelLoadError line (and `error:` + exit 2 from the CLI) ------


def _write(relative: str, data: bytes | str) -> object:
    def corrupt(model_dir: Path) -> None:
        path = model_dir / relative
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")

    return corrupt


def _edit_json(**changes: object) -> object:
    def corrupt(model_dir: Path) -> None:
        path = model_dir / "Qwen3-0.6B" / "config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        for key, value in changes.items():
            if value is _DROP:
                config.pop(key, None)
            else:
                config[key] = value
        path.write_text(json.dumps(config), encoding="utf-8")

    return corrupt


def _edit_yaml(section: str, **changes: object) -> object:
    def corrupt(model_dir: Path) -> None:
        path = model_dir / "config.yaml"
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        if changes:
            config[section].update(changes)
        else:
            config[section] = "not a mapping"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")

    return corrupt


_DROP = object()
RANDOM_BYTES = bytes(range(256)) * 8  # not UTF-8, not YAML, not JSON


@pytest.mark.parametrize(("corrupt", "fragments"), [
    (_write("config.yaml", RANDOM_BYTES), ["config.yaml", "not UTF-8"]),
    (_write("config.yaml", "just a scalar\n"), ["config.yaml", "must be a mapping", "str"]),
    (_write("config.yaml", "a: [unclosed\n"), ["config.yaml", "not valid YAML"]),
    (_edit_yaml("audio_encoder_conf"), ["audio_encoder_conf must be a mapping"]),
    (_edit_yaml("audio_encoder_conf", output_size="big"), ["audio_encoder_conf", "output_size", "positive integer"]),
    (_edit_yaml("audio_adaptor_conf", n_layer=-1), ["audio_adaptor_conf", "n_layer", "-1"]),
    (_edit_yaml("audio_adaptor_conf", attention_heads=True), ["attention_heads", "True"]),
    (_write("Qwen3-0.6B/config.json", RANDOM_BYTES), ["config.json", "not UTF-8"]),
    (_write("Qwen3-0.6B/config.json", "[1, 2, 3]"), ["config.json", "JSON object", "list"]),
    (_write("Qwen3-0.6B/config.json", '{"hidden_size": '), ["config.json", "not valid JSON"]),
    (_edit_json(hidden_size="abc"), ["config.json", "hidden_size must be a positive integer", "'abc'"]),
    (_edit_json(hidden_size=64.0), ["hidden_size must be a positive integer", "64.0"]),
    (_edit_json(num_attention_heads=0, head_dim=_DROP), ["num_attention_heads must be a positive integer", "0"]),
    (_edit_json(num_attention_heads=-4), ["num_attention_heads", "-4"]),
    (_edit_json(num_key_value_heads=3), ["num_attention_heads", "multiple of num_key_value_heads"]),
    (_edit_json(hidden_size=2, head_dim=_DROP), ["hidden_size (2) is smaller than num_attention_heads"]),
    (_edit_json(head_dim=0), ["head_dim must be a positive integer"]),
    (_edit_json(vocab_size=None), ["vocab_size must be a positive integer", "None"]),
    (_edit_json(rms_norm_eps="tiny"), ["rms_norm_eps must be a positive number"]),
    (_edit_json(rope_theta=-1.0), ["rope_theta must be a positive number"]),
    (_edit_json(tie_word_embeddings="yes"), ["tie_word_embeddings must be true or false"]),
    (_edit_json(eos_token_id=10**9), ["eos_token_id must be a token id"]),
    (_edit_json(eos_token_id=[]), ["eos_token_id must be a token id"]),
    (_write("Qwen3-0.6B/tokenizer.json", RANDOM_BYTES), ["tokenizer.json", "not UTF-8"]),
    (_write("Qwen3-0.6B/tokenizer.json", '{"version": "1.0", "model": 3}'), ["tokenizer.json",
                                                                           "not a valid tokenizer.json"]),
])
def test_a_damaged_config_is_one_line_naming_the_file_and_key(official_tiny, tmp_path, corrupt, fragments):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    corrupt(model_dir)
    expect_load_error(model_dir, *fragments)


def test_missing_config_yaml_is_named(official_tiny, tmp_path):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    (model_dir / "config.yaml").unlink()
    message = expect_load_error(model_dir, "no config.yaml")
    assert "lacks" not in message


def test_damaged_files_from_the_cli_are_one_error_line_and_status_2(official_tiny, tmp_path, capsys):
    from funasr_nano.cli.main import main

    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    for relative in ("config.yaml", "Qwen3-0.6B/config.json", "Qwen3-0.6B/tokenizer.json"):
        original = (model_dir / relative).read_bytes()
        (model_dir / relative).write_bytes(RANDOM_BYTES)
        status = main(["transcribe", str(audio), "-m", str(model_dir), "--device", "cpu", "-q"])
        err = capsys.readouterr().err
        assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert relative.split("/")[-1] in err
        (model_dir / relative).write_bytes(original)


def _deny(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """Reading ``denied`` (a file, or anything under a directory) fails as it does for a user without the
    permission: the tests may run as root, whom chmod does not stop."""
    read_bytes, access = Path.read_bytes, os.access

    def guarded_read(path: Path) -> bytes:
        if path == denied or denied in path.parents:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", guarded_read)
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != denied and access(path, mode, **kw))


@pytest.mark.parametrize("denied", ["", "Qwen3-0.6B", "config.yaml", "Qwen3-0.6B/config.json",
                                    "Qwen3-0.6B/tokenizer.json"])
def test_unreadable_files_and_directories_say_permission_denied(official_tiny, tmp_path, monkeypatch, denied):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    _deny(monkeypatch, model_dir / denied if denied else model_dir)
    message = expect_load_error(model_dir, "permission denied")
    assert "JSON" not in message and "YAML" not in message


def test_unreadable_model_pt_says_permission_denied(official_tiny, tmp_path, monkeypatch):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    real_load = torch.load

    def denied_load(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(path) == model_dir / "model.pt":
            raise PermissionError(13, "Permission denied", str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", denied_load)
    message = expect_load_error(model_dir, "permission denied", "model.pt")
    assert "truncated" not in message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="chmod does not stop root")
def test_a_directory_without_read_permission(official_tiny, tmp_path):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    (model_dir / "Qwen3-0.6B").chmod(0)
    try:
        expect_load_error(model_dir, "permission denied")
    finally:
        (model_dir / "Qwen3-0.6B").chmod(0o755)


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
    _edit_json(eos_token_id=[151643, 151645])(model_dir)
    assert funasr_nano.load_model(model_dir, device="cpu").backend.engine.stop_ids == {151643, 151645}
    _edit_json(eos_token_id=_DROP)(model_dir)
    assert funasr_nano.load_model(model_dir, device="cpu").backend.engine.stop_ids == {151645}


def test_an_unknown_hub_is_a_usage_error():
    with pytest.raises(funasr_nano.UsageError, match="hub"):
        resolve_model_dir("FunAudioLLM/Fun-ASR-Nano-2512", hub="github")


@pytest.mark.parametrize(
    ("corrupt", "fragments"),
    [
        (_write("config.yaml", ""), ["config.yaml is empty"]),
        (_write("config.yaml", "\n# only a comment\n"), ["config.yaml is empty"]),
    ],
)
def test_an_empty_config_is_named_not_reported_as_missing_tensors(official_tiny, tmp_path, corrupt, fragments):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    corrupt(model_dir)
    assert "lacks" not in expect_load_error(model_dir, *fragments)


@pytest.mark.parametrize("relative", ["config.yaml", "Qwen3-0.6B/config.json", "Qwen3-0.6B/tokenizer.json", "model.pt"])
def test_a_directory_where_a_model_file_belongs_is_named(official_tiny, tmp_path, relative):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    (model_dir / relative).unlink()
    (model_dir / relative).mkdir()
    expect_load_error(model_dir, relative.split("/")[-1], "is a directory")


def test_empty_and_foreign_model_files_are_one_line(official_tiny, tmp_path):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    (model_dir / "model.pt").write_bytes(b"")
    expect_load_error(model_dir, "model.pt is unreadable", "truncated")
    assert "is a file" in expect_load_error(official_tiny.model_dir / "config.yaml")


class _Exploit:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_malicious_pickle_is_refused_silently_and_never_run(official_tiny, tmp_path, capfd, monkeypatch, legacy):
    import pickle

    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    if legacy:  # a plain pickle (not torch's zip format), protocol 4: torch.load warns about it on stderr
        (model_dir / "model.pt").write_bytes(pickle.dumps({"state_dict": _Exploit()}, protocol=4))
    else:
        torch.save({"state_dict": _Exploit()}, model_dir / "model.pt")
    capfd.readouterr()
    expect_load_error(model_dir, "model.pt", "weights_only")
    assert not (tmp_path / "pwned.txt").exists()
    assert capfd.readouterr().err == ""  # no torch warning besides the one error line
