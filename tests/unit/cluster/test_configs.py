"""The shipped cluster configs parse, pass Ray's own schema, and ask for what their comments promise."""

from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[3] / "cluster" / "configs"


def test_aws_config_passes_the_cluster_launcher_schema_with_a_head_and_a_gpu_group():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CONFIGS / "aws.yaml").read_text())
    validate_config(prepare_config(config))  # what `ray up` checks before launching anything
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    gpu_groups = {name: t for name, t in types.items() if t["node_config"]["InstanceType"].startswith("p5.")}
    assert head["resources"] == {"CPU": 0} and head["max_workers"] == 0
    assert len(gpu_groups) == 1
    assert next(iter(gpu_groups.values()))["max_workers"] * 8 == 64 == config["max_workers"] * 8
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2 and "~/.ray/auth_token" in config["file_mounts"]


def test_kuberay_config_is_a_raycluster_with_a_head_and_an_8_gpu_worker_group():
    config = yaml.safe_load((CONFIGS / "kuberay.yaml").read_text())
    assert (config["apiVersion"], config["kind"]) == ("ray.io/v1", "RayCluster")
    spec = config["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = spec["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == group["rayStartParams"]["num-gpus"] == "8"
    assert group["maxReplicas"] * int(limits["nvidia.com/gpu"]) == 64
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/mnt/shared", "/dev/shm"} <= mounts
    head_containers = spec["headGroupSpec"]["template"]["spec"]["containers"]
    images = {c["image"] for c in head_containers} | {container["image"]}
    assert images == {f"rayproject/ray:{spec['rayVersion']}-py311-gpu"}
