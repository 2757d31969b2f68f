"""The profile schema (firesim.workload): versions, consistency, strict JSON, and no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from firesim.errors import UserError
from firesim.workload import WORKLOAD_FORMAT, ModelProfile, load_workload

V1_PROFILE = {  # as main wrote them before versioning: no format, train_images, fwd_macs, no element counts
    "name": "old", "input_shape": [3, 8, 8], "params": 30, "fwd_macs": 100, "fwd_flops": 230, "train_images": 10,
    "layers": [
        {"name": "conv", "type": "Conv2d", "params": 30, "fwd_macs": 100, "fwd_flops": 200, "output_shape": [4]},
        {"name": "relu", "type": "ReLU", "params": 0, "fwd_macs": 0, "fwd_flops": 30, "output_shape": [4]},
    ],
}


def _write(tmp_path: Path, data) -> str:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_version_1_files_load_with_backward_twice_forward(tmp_path: Path) -> None:
    profile = load_workload(_write(tmp_path, V1_PROFILE))
    assert profile.format == "firesim.workload/1" and profile.train_samples == 10
    assert (profile.bwd_flops, profile.train_flops, profile.saved_elements) == (460, 690, 0)
    assert json.loads(profile.to_json())["fwd_macs"] == 100  # kept in a version-1 file


def test_version_2_round_trips_as_strict_json_without_v1_fields() -> None:
    profile = load_workload("gpt2")
    assert profile.format == WORKLOAD_FORMAT
    text = profile.to_json()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert "fwd_macs" not in data and "fwd_macs" not in data["layers"][0]
    assert ModelProfile.model_validate(data) == profile
    assert profile.tokens_per_sample == 1024 and load_workload("resnet50").tokens_per_sample == 1


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "firesim.workload/9"}, "format 'firesim.workload/9' is not one this version reads"),
    ({"fwd_flops": 1}, "fwd_flops: 1 differs from the sum over layers"),
    ({"params": 1}, "params: 1 differs from the sum over layers"),
    ({"layers": []}, "layers"),
    ({"train_samples": 0}, "train_samples"),
])
def test_bad_profiles_are_one_line(tmp_path: Path, change: dict, message: str) -> None:
    data = json.loads(load_workload("small_cnn").to_json())
    data.update(change)
    with pytest.raises(UserError, match=message) as excinfo:
        load_workload(_write(tmp_path, data))
    assert "\n" not in str(excinfo.value)


def test_unreadable_files_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe")
    (tmp_path / "text.json").write_text("{not json")
    for spec, message in [(tmp_path / "bin.json", "not UTF-8"), (tmp_path / "text.json", "not JSON"),
                          (tmp_path / "none.json", "no such profile file"), (_write(tmp_path, [1]), "JSON object")]:
        with pytest.raises(UserError, match=message):
            load_workload(spec)


def test_firesim_reads_profiles_without_torch() -> None:
    code = ("import sys, firesim.workload as w; p = w.load_workload('llama2_7b'); "
            "assert p.params > 6e9 and 'gpt2' in w.list_workloads(); "
            "assert 'torch' not in sys.modules, 'firesim.workload imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_another_sequence_length_says_how_to_profile_it() -> None:
    assert load_workload("gpt2", seq_len=1024).seq_len == 1024
    with pytest.raises(UserError, match=r"for 1024 tokens; for 512, run `firerun profile --model gpt2 --seq-len 512 "
                                        r"-o gpt2-512\.json`"):
        load_workload("gpt2", seq_len=512)
    with pytest.raises(UserError, match="takes images"):
        load_workload("resnet50", seq_len=512)
