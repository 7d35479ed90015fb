"""Every broken model directory is one ``ModelLoadError`` line naming the file (and ``error:`` with exit
status 2 from the CLI): missing pieces, truncated, foreign or malicious checkpoints (never unpickled),
wrong shapes or missing tensors, damaged or empty configs, unreadable files and directories, and
directories where a file belongs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from checkpoint_helpers import (
    DROP,
    RANDOM_BYTES,
    copy_model_dir,
    edit_json,
    edit_yaml,
    expect_load_error,
    official_state,
    write_file,
)


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


def test_empty_and_foreign_model_files_are_one_line(official_tiny, tmp_path):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    (model_dir / "model.pt").write_bytes(b"")
    expect_load_error(model_dir, "model.pt is unreadable", "truncated")
    assert "is a file" in expect_load_error(official_tiny.model_dir / "config.yaml")


@pytest.mark.parametrize("relative", ["config.yaml", "Qwen3-0.6B/config.json", "Qwen3-0.6B/tokenizer.json", "model.pt"])
def test_a_directory_where_a_model_file_belongs_is_named(official_tiny, tmp_path, relative):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    (model_dir / relative).unlink()
    (model_dir / relative).mkdir()
    expect_load_error(model_dir, relative.split("/")[-1], "is a directory")


# --- pickles: weights only ------------------------------------------------------------------------------


class Payload:
    """Any non-tensor object: weights_only loading must refuse it instead of unpickling."""


def test_arbitrary_pickles_are_refused(official_tiny, tmp_path):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    torch.save(
        {"state_dict": official_state(official_tiny.model_dir), "extra": Payload()}, model_dir / "model.pt"
    )
    expect_load_error(model_dir, "only weights_only")


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


# --- damaged configs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("corrupt", "fragments"), [
    (write_file("config.yaml", RANDOM_BYTES), ["config.yaml", "not UTF-8"]),
    (write_file("config.yaml", "just a scalar\n"), ["config.yaml", "must be a mapping", "str"]),
    (write_file("config.yaml", "a: [unclosed\n"), ["config.yaml", "not valid YAML"]),
    (edit_yaml("audio_encoder_conf"), ["audio_encoder_conf must be a mapping"]),
    (edit_yaml("audio_encoder_conf", output_size="big"), ["audio_encoder_conf", "output_size", "positive integer"]),
    (edit_yaml("audio_adaptor_conf", n_layer=-1), ["audio_adaptor_conf", "n_layer", "-1"]),
    (edit_yaml("audio_adaptor_conf", attention_heads=True), ["attention_heads", "True"]),
    (write_file("Qwen3-0.6B/config.json", RANDOM_BYTES), ["config.json", "not UTF-8"]),
    (write_file("Qwen3-0.6B/config.json", "[1, 2, 3]"), ["config.json", "JSON object", "list"]),
    (write_file("Qwen3-0.6B/config.json", '{"hidden_size": '), ["config.json", "not valid JSON"]),
    (edit_json(hidden_size="abc"), ["config.json", "hidden_size must be a positive integer", "'abc'"]),
    (edit_json(hidden_size=64.0), ["hidden_size must be a positive integer", "64.0"]),
    (edit_json(num_attention_heads=0, head_dim=DROP), ["num_attention_heads must be a positive integer", "0"]),
    (edit_json(num_attention_heads=-4), ["num_attention_heads", "-4"]),
    (edit_json(num_key_value_heads=3), ["num_attention_heads", "multiple of num_key_value_heads"]),
    (edit_json(hidden_size=2, head_dim=DROP), ["hidden_size (2) is smaller than num_attention_heads"]),
    (edit_json(head_dim=0), ["head_dim must be a positive integer"]),
    (edit_json(vocab_size=None), ["vocab_size must be a positive integer", "None"]),
    (edit_json(rms_norm_eps="tiny"), ["rms_norm_eps must be a positive number"]),
    (edit_json(rope_theta=-1.0), ["rope_theta must be a positive number"]),
    (edit_json(tie_word_embeddings="yes"), ["tie_word_embeddings must be true or false"]),
    (edit_json(eos_token_id=10**9), ["eos_token_id must be a token id"]),
    (edit_json(eos_token_id=[]), ["eos_token_id must be a token id"]),
    (write_file("Qwen3-0.6B/tokenizer.json", RANDOM_BYTES), ["tokenizer.json", "not UTF-8"]),
    (write_file("Qwen3-0.6B/tokenizer.json", '{"version": "1.0", "model": 3}'), ["tokenizer.json",
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


@pytest.mark.parametrize(
    ("corrupt", "fragments"),
    [
        (write_file("config.yaml", ""), ["config.yaml is empty"]),
        (write_file("config.yaml", "\n# only a comment\n"), ["config.yaml is empty"]),
    ],
)
def test_an_empty_config_is_named_not_reported_as_missing_tensors(official_tiny, tmp_path, corrupt, fragments):
    model_dir = copy_model_dir(official_tiny.model_dir, tmp_path / "m")
    corrupt(model_dir)
    assert "lacks" not in expect_load_error(model_dir, *fragments)


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


# --- permissions ------------------------------------------------------------------------------------------


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
