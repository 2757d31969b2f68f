"""The hardware catalog: sourced figures, presets, alpha-beta-gamma arithmetic, overrides, errors, profiles."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from firesim import hardware as hw
from firesim.analytic import CommParams
from firesim.compute import Rates, achieved_rates
from firesim.errors import UserError

PRESETS = {"titan", "ib-fdr-k80", "dgx-a100", "dgx-h100", "dgx-1v", "ethernet-10g"}
GPUS = {"k20", "k20x", "k80", "titan-x-maxwell", "p100-sxm2", "v100-sxm2", "a100-sxm4-40gb", "a100-sxm4-80gb",
        "h100-sxm", "h200"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def user_error(fn, *args) -> str:
    """Run fn expecting a UserError; return its message after checking it is one clean line."""
    with pytest.raises(UserError) as info:
        fn(*args)
    assert not isinstance(info.value, ValidationError)
    assert info.value.__cause__ is None
    message = str(info.value)
    assert "\n" not in message and message == message.strip()
    return message


# ------------------------------------------------------------------------------------------ packaged data
def test_packaged_catalog_has_the_expected_entries():
    catalog = hw.load_catalog()
    assert GPUS <= set(catalog.gpus)
    assert PRESETS <= set(catalog.clusters)
    assert {"cray-gemini", "cray-aries", "ib-fdr", "ib-edr", "ib-hdr", "ib-ndr", "eth-10g", "eth-25g",
            "eth-100g", "nvlink2", "nvlink3", "nvlink4", "pcie2-x16", "pcie3-x16", "pcie4-x16",
            "pcie5-x16"} <= set(catalog.links)
    assert all("fp32" in gpu.peak_flops for gpu in catalog.gpus.values())
    assert hw.load_catalog() is catalog  # the packaged file is parsed once


def test_every_figure_has_a_source():
    catalog = hw.load_catalog()
    entries = [*catalog.gpus.values(), *catalog.links.values(), *catalog.clusters.values()]
    for entry in entries:
        for field in type(entry).FIGURES:
            required = isinstance(entry, (hw.GPU, hw.Link)) or getattr(entry, field) is not None
            if required:
                source = entry.sources.get(field, "")
                assert len(source.strip()) > 10, f"{entry.name}.{field} has no source"
        assert set(entry.sources) <= set(type(entry).FIGURES), f"{entry.name}: source for an unknown field"


def test_presets_resolve_and_name_existing_gpus_and_links():
    catalog = hw.load_catalog()
    raw = yaml.safe_load(hw._packaged_path().read_text())
    for name, entry in raw["clusters"].items():
        assert entry["gpu"] in raw["gpus"]
        assert entry["inter_node_link"] in raw["links"]
        assert entry["intra_node_link"] is None or entry["intra_node_link"] in raw["links"]
        cluster = hw.resolve_cluster(name)
        assert cluster == catalog.clusters[name]
        assert cluster.gpu == catalog.gpus[entry["gpu"]]
        assert cluster.inter_node_link == catalog.links[entry["inter_node_link"]]
        assert hw.comm_params(cluster, "inter").beta_s_per_byte > 0
        assert achieved_rates(cluster, "fp32").conv_flops > 0
    assert [c.name for c in hw.list_presets(catalog)] == list(raw["clusters"])


def test_titan_matches_the_reference_figures():
    titan = hw.resolve_cluster("titan")
    assert titan.gpu.peak_flops["fp32"] == pytest.approx(3.95e12)
    assert titan.gpus_per_node == 1 and titan.intra_node_link is None and titan.topology == "torus3d"
    assert titan.inter_node_link.bandwidth_Bps == pytest.approx(6.4e9)
    assert titan.inter_node_link.latency_s == pytest.approx(1.5e-6)


# --------------------------------------------------------------------------------------------- arithmetic
HAND = """\
gpus:
  toy:
    peak_flops: {fp32: 10 TFLOP/s, fp16: 40TFLOPS}
    memory_bandwidth_Bps: 300GB/s
    memory_GiB: 16
    price_per_hour_usd: 2.0
    conv_efficiency: {fp32: 0.5, fp16: 0.25}
    matmul_efficiency: 0.8
    memory_efficiency: 0.9
    layer_overhead_s: 4us
links:
  toy-net:
    bandwidth_Bps: 80gbit
    latency_s: 2us
    efficiency: 0.5
  toy-bus:
    bandwidth_Bps: 100GB/s
    latency_s: 0.5us
    efficiency: 0.8
clusters:
  toy-cluster:
    gpu: toy
    gpus_per_node: 4
    intra_node_link: toy-bus
    inter_node_link: toy-net
    topology: star
    software_latency_s: 3us
"""


def test_comm_params_hand_example(tmp_path):
    cluster = hw.resolve_cluster("toy-cluster", hw.load_catalog(write(tmp_path, "toy.yaml", HAND)))
    inter = hw.comm_params(cluster, "inter")
    assert inter.alpha_s == pytest.approx(5e-6, rel=1e-12)            # 3 us software + 2 us link
    assert inter.beta_s_per_byte == pytest.approx(1 / 5e9, rel=1e-12)  # 80 Gbit/s = 10 GB/s, x 0.5
    assert inter.gamma_s_per_byte == pytest.approx(1e-11, rel=1e-12)   # 3 / 300 GB/s
    intra = hw.comm_params(cluster, "intra")
    assert intra == CommParams(3e-6 + 0.5e-6, 1 / (100e9 * 0.8), 3 / 300e9)


def test_titan_comm_params_follow_the_formula():
    titan = hw.resolve_cluster("titan")
    p = hw.comm_params(titan)
    link = titan.inter_node_link
    assert p.alpha_s == titan.software_latency_s + link.latency_s
    assert p.beta_s_per_byte == 1 / (link.bandwidth_Bps * link.efficiency)
    assert p.gamma_s_per_byte == 3 / titan.gpu.memory_bandwidth_Bps
    message = user_error(hw.comm_params, titan, "intra")
    assert "titan" in message and "intra" in message
    assert "level" in user_error(hw.comm_params, titan, "rack")


def test_gamma_and_price_overrides(tmp_path):
    path = write(tmp_path, "o.yaml", """\
        clusters:
          titan: {gamma_s_per_byte: 2.5e-10, price_per_gpu_hour_usd: 0.75,
                  sources: {gamma_s_per_byte: host-side reduce on the Opteron, price_per_gpu_hour_usd: a guess}}
        """)
    titan = hw.resolve_cluster("titan", hw.load_catalog(path))
    assert hw.comm_params(titan).gamma_s_per_byte == 2.5e-10
    assert hw.price_per_gpu_hour(titan) == 0.75
    assert hw.price_per_gpu_hour(hw.resolve_cluster("titan")) is None
    assert hw.price_per_gpu_hour(hw.resolve_cluster("dgx-a100")) == pytest.approx(40.97 / 8, abs=0.01)


def test_achieved_rates_from_the_catalog(tmp_path):
    cluster = hw.resolve_cluster("toy-cluster", hw.load_catalog(write(tmp_path, "toy.yaml", HAND)))
    assert achieved_rates(cluster, "fp32") == Rates(conv_flops=10e12 * 0.5, matmul_flops=10e12 * 0.8,
                                                    memory_Bps=300e9 * 0.9, layer_overhead_s=4e-6, vector_flops=10e12)
    assert achieved_rates(cluster, "fp16") == Rates(40e12 * 0.25, 40e12 * 0.8, 300e9 * 0.9, 4e-6, 10e12)
    assert "bf16" in user_error(achieved_rates, cluster, "bf16")  # one number broadcast to fp32 and fp16 only
    assert set(cluster.gpu.matmul_efficiency) == {"fp32", "fp16"}


def test_gpu_efficiencies_cover_every_dtype(tmp_path):
    missing = write(tmp_path, "m.yaml", "gpus:\n  v100-sxm2: {peak_flops: {fp32: 1e12, fp16: 2e12, bf16: 2e12}}\n")
    assert "conv_efficiency: no value for bf16" in user_error(hw.load_catalog, missing)
    orphan = write(tmp_path, "o.yaml", "gpus:\n  k20x: {conv_efficiency: {fp32: 0.2, bf16: 0.3}}\n")
    assert "bf16 has no peak_flops entry" in user_error(hw.load_catalog, orphan)


# ---------------------------------------------------------------------------------------- user overrides
def test_user_yaml_overrides_and_adds(tmp_path):
    first = write(tmp_path, "first.yaml", """\
        gpus:
          h100-sxm: {price_per_hour_usd: 2.5}
          a100-sxm4-80gb: {conv_efficiency: 0.5}
        links:
          ib-xdr: {bandwidth_Bps: 800gbit, latency_s: 0.5us, efficiency: 0.9}
        """)
    second = write(tmp_path, "second.yaml", """\
        clusters:
          xdr-h100:
            gpu: h100-sxm
            gpus_per_node: 8
            intra_node_link: nvlink4
            inter_node_link: ib-xdr
            nics_per_node: 8
            topology: fat-tree
            software_latency_s: 4us
        gpus:
          h100-sxm: {price_per_hour_usd: 3.0}
        """)
    catalog = hw.load_catalog(first, second)
    assert catalog.gpus["h100-sxm"].price_per_hour_usd == 3.0             # later file wins
    assert catalog.gpus["h100-sxm"].peak_flops == hw.load_catalog().gpus["h100-sxm"].peak_flops
    assert set(catalog.gpus["a100-sxm4-80gb"].conv_efficiency.values()) == {0.5}  # one number, every dtype
    xdr = hw.resolve_cluster("xdr-h100", catalog)
    assert xdr.inter_node_link.bandwidth_Bps == 100e9
    assert hw.price_per_gpu_hour(xdr) == 3.0
    assert hw.resolve_cluster("dgx-h100", catalog).gpu.price_per_hour_usd == 3.0  # presets see the override
    assert hw.load_catalog().gpus["h100-sxm"].price_per_hour_usd == 12.29       # packaged data untouched
    assert "xdr-h100" not in hw.load_catalog().clusters


def test_cluster_file_with_names_and_inline_definitions(tmp_path):
    path = write(tmp_path, "lab.yaml", """\
        kind: cluster
        description: two workstations on 25 GbE
        gpu: v100-sxm2
        gpus_per_node: 2
        intra_node_link: {bandwidth_Bps: 12GB/s, latency_s: 1us, efficiency: 1}
        inter_node_link: eth-25g
        topology: star
        software_latency_s: 20us
        """)
    lab = hw.resolve_cluster(str(path))
    assert lab.name == "lab" and lab.gpu.name == "v100-sxm2"
    assert lab.intra_node_link.name == "lab.intra_node_link"
    assert hw.comm_params(lab, "intra").beta_s_per_byte == 1 / 12e9
    assert hw.comm_params(lab, "inter").alpha_s == pytest.approx(20e-6 + 5e-6)


@pytest.mark.parametrize(("link", "expected_Bps"), [
    ({"bandwidth_Bps": "25GB/s"}, 25e9), ({"bandwidth_Bps": "56gbit"}, 7e9), ({"bandwidth_Bps": "1Gbps"}, 125e6),
    ({"bandwidth_Bps": 12.5e9}, 12.5e9), ({"bandwidth_Bps": "12.5e9"}, 12.5e9),
])
def test_unit_strings_parse(link, expected_Bps):
    parsed = hw.Link(name="x", latency_s="1.5us", efficiency=1, **link)
    assert parsed.bandwidth_Bps == expected_Bps
    assert parsed.latency_s == pytest.approx(1.5e-6)
    assert hw.parse_flops("19.5 TFLOP/s") == 19.5e12
    assert hw.parse_flops("312TFLOPS") == 312e12 and hw.parse_flops(1e9) == 1e9
    gpu = hw.GPU(name="g", peak_flops={"fp32": "1e12"}, memory_bandwidth_Bps="1TB/s", memory_GiB="80GiB",
                 conv_efficiency=1, matmul_efficiency=1, memory_efficiency=1, layer_overhead_s="2us")
    assert gpu.memory_GiB == 80 and gpu.memory_bandwidth_Bps == 1e12 and gpu.layer_overhead_s == pytest.approx(2e-6)


# ------------------------------------------------------------------------------------------- bad inputs
BAD = {
    "unknown-field": ("gpus:\n  k20x: {colour: green}\n", "gpus.k20x.colour", "unknown field"),
    "negative-bandwidth": ("links:\n  ib-fdr: {bandwidth_Bps: -5}\n", "links.ib-fdr.bandwidth_Bps", "negative"),
    "zero-bandwidth": ("links:\n  ib-fdr: {bandwidth_Bps: 0}\n", "links.ib-fdr.bandwidth_Bps", "> 0"),
    "furlongs": ("links:\n  ib-fdr: {bandwidth_Bps: 12 furlongs}\n", "links.ib-fdr.bandwidth_Bps", "12 furlongs"),
    "bad-latency": ("links:\n  ib-fdr: {latency_s: soon}\n", "links.ib-fdr.latency_s", "soon"),
    "efficiency-above-one": ("links:\n  ib-fdr: {efficiency: 1.5}\n", "links.ib-fdr.efficiency", "<= 1"),
    "bad-dtype": ("gpus:\n  k20x: {peak_flops: {fp33: 1e12}}\n", "gpus.k20x.peak_flops.fp33", "fp32"),
    "missing-field": ("links:\n  new: {bandwidth_Bps: 1GB/s, latency_s: 1us}\n", "links.new.efficiency",
                      "required"),
    "unknown-gpu-ref": ("clusters:\n  titan: {gpu: k21x}\n", "clusters.titan.gpu", "k21x"),
    "unknown-section": ("routers: {}\n", "routers", "unknown section"),
    "bad-topology": ("clusters:\n  titan: {topology: hypercube}\n", "clusters.titan.topology", "torus3d"),
    "intra-without-gpus": ("clusters:\n  titan: {intra_node_link: nvlink2}\n", "clusters.titan",
                           "intra_node_link"),
    "malformed": ("gpus:\n  k20x: {peak_flops: [1, 2\n", "malformed YAML at line", "line"),
    "not-a-mapping": ("- just\n- a list\n", "expected a mapping", "gpus"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_user_yaml_is_one_line_naming_the_field(tmp_path, case):
    text, field, reason = BAD[case]
    path = write(tmp_path, f"{case}.yaml", text)
    message = user_error(hw.load_catalog, path)
    assert message.startswith(f"{path}: "), message
    assert field in message and reason in message, message


def test_unknown_preset_and_missing_file():
    message = user_error(hw.resolve_cluster, "summit")
    assert "summit" in message and all(name in message for name in PRESETS)
    assert "no such file" in user_error(hw.resolve_cluster, "/nonexistent/cluster.yaml")
    assert "no such file" in user_error(hw.load_catalog, "/nonexistent/catalog.yaml")


def test_bad_cluster_files(tmp_path):
    unknown = write(tmp_path, "c.yaml", "gpu: k20x\ngpus_per_node: 1\ninter_node_link: ib-fdr\n"
                    "topology: star\nspeed: fast\n")
    assert user_error(hw.resolve_cluster, str(unknown)) == f"{unknown}: speed: unknown field"
    inline = write(tmp_path, "i.yaml", "gpu: k20x\ngpus_per_node: 1\ntopology: star\n"
                   "inter_node_link: {bandwidth_Bps: 12 furlongs, latency_s: 1us, efficiency: 1}\n")
    assert "inter_node_link.bandwidth_Bps" in user_error(hw.resolve_cluster, str(inline))
    catalog_file = write(tmp_path, "cat.yaml", "clusters: {}\n")
    assert "catalog" in user_error(hw.resolve_cluster, str(catalog_file))
    wrong_kind = write(tmp_path, "k.yaml", "kind: plan\n")
    assert "kind" in user_error(hw.resolve_cluster, str(wrong_kind))


# ---------------------------------------------------------------------------------------------- profiles
def make_profile(**changes) -> hw.HardwareProfile:
    fields = dict(
        name="lab-4x", alpha_s=2.1e-4, beta_s_per_byte=1 / (0.9564 * 125e6), gamma_s_per_byte=3.3e-10,
        compute_flops=2.5e10, gpus_per_node=2, nics_per_node=1, topology="star",
        overrides={"intra": {"alpha_s": "40us", "beta_s_per_byte": 1.7e-10}},
        source="firerun calibrate: gloo ring fit, 4 ranks, 1-64 MiB", measured_on="emulated 4 x 1gbit",
        created=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
    )
    fields.update(changes)
    return hw.HardwareProfile(**fields)


def test_profile_save_resolve_round_trip(tmp_path):
    profile = make_profile()
    path = hw.save_profile(profile, tmp_path / "profiles" / "lab.yaml")
    assert hw.load_profile(path) == profile
    cluster = hw.resolve_cluster(str(path))
    assert cluster.profile == profile and cluster.name == "lab-4x"
    assert hw.comm_params(cluster, "inter") == CommParams(2.1e-4, profile.beta_s_per_byte, 3.3e-10)
    intra = hw.comm_params(cluster, "intra")
    assert intra == CommParams(profile.overrides["intra"].alpha_s, 1.7e-10, 3.3e-10)
    assert intra.alpha_s == pytest.approx(40e-6, rel=1e-12)  # "40us" parses as 40 * 1e-6
    assert achieved_rates(cluster, "fp32") == Rates(2.5e10, 2.5e10, 3 / 3.3e-10, 0.0)  # no compute section
    assert "fp16" in user_error(achieved_rates, cluster, "fp16")
    hw.save_profile(make_profile(compute_flops=3e10), path)  # atomic overwrite, no temp files left behind
    assert hw.load_profile(path).compute_flops == 3e10
    assert sorted(p.name for p in path.parent.iterdir()) == ["lab.yaml"]


def test_compute_profile_rates_and_compute_only_profiles(tmp_path):
    compute = hw.ComputeProfile(conv_flops="3 TFLOP/s", matmul_flops=5e12, memory_Bps="400GB/s",
                                layer_overhead_s="7us",
                                step_times=[hw.StepTime(model="small_cnn", batch=8, forward_s=0.01, backward_s=0.02)])
    with_network = hw.profile_to_cluster(make_profile(compute=compute))
    assert achieved_rates(with_network, "fp32") == Rates(3e12, 5e12, 400e9, 7e-6)
    alone = make_profile(alpha_s=None, beta_s_per_byte=None, gamma_s_per_byte=None, compute_flops=None,
                         compute=compute, overrides={}, gpus_per_node=1)
    path = hw.save_profile(alone, tmp_path / "alone.yaml")
    cluster = hw.resolve_cluster(str(path))
    assert cluster.profile == alone and achieved_rates(cluster, "fp32").layer_overhead_s == 7e-6
    assert "no network figures" in user_error(hw.comm_params, cluster, "inter")
    with pytest.raises(ValidationError, match="all three or none"):
        make_profile(alpha_s=None)
    with pytest.raises(ValidationError, match="compute"):
        make_profile(compute_flops=None)
    with pytest.raises(ValidationError, match="dtype"):
        make_profile(compute=compute.model_copy(update={"dtype": "fp16"}))


def test_single_gpu_profile_and_bad_profiles(tmp_path):
    single = hw.profile_to_cluster(make_profile(gpus_per_node=1, overrides={}))
    assert single.intra_node_link is None
    assert "intra" in user_error(hw.comm_params, single, "intra")
    bad = write(tmp_path, "p.yaml", "kind: profile\nname: x\nalpha_s: 1us\nbeta_s_per_byte: -1\n"
                "gamma_s_per_byte: 1e-10\ncompute_flops: 1e12\n")
    message = user_error(hw.resolve_cluster, str(bad))
    assert message.startswith(f"{bad}: beta_s_per_byte: ")
    with pytest.raises(ValidationError):
        make_profile(gpus_per_node=1)  # an intra override needs several GPUs per node


def test_hardware_module_does_not_import_torch():
    code = "import sys, firesim.hardware as h; h.load_catalog(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
