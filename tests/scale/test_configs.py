"""cluster.yaml and the KubeRay manifest: valid, and shaped as promised (head without job work, workers from zero)."""

from __future__ import annotations

import yaml

from .cluster import ROOT


def test_cluster_yaml_passes_rays_own_validation_and_scales_workers_from_zero():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    validate_config(config)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert {name: types[name]["min_workers"] for name in ("cpu_worker", "gpu_worker")} == \
        {"cpu_worker": 0, "gpu_worker": 0}
    assert config["idle_timeout_minutes"] > 0
    assert any("pip install" in cmd and "dojo" in cmd for cmd in config["setup_commands"])
    assert any("--num-cpus=0" in cmd for cmd in config["head_start_ray_commands"])


def test_kuberay_cluster_autoscales_both_groups_from_zero_with_a_cpu_less_head():
    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "deploy/kuberay/dojo.yaml").read_text())}
    spec = docs["RayCluster"]["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert {g["groupName"]: g["minReplicas"] for g in spec["workerGroupSpecs"]} == {"cpu-worker": 0, "gpu-worker": 0}
    # The head's own start command runs `dojo up` (every head restart brings the API back).
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "dojo up" in " ".join(head.get("args") or head.get("command") or [])
