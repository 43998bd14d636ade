"""Addresses, token auth, and the cluster summary, from plain data (no Ray started)."""

import pytest

from cluster.ray_cluster import (
    ClusterAddressError,
    ClusterConnectError,
    address_kind,
    auth_environment,
    connect,
    format_status,
    summarize,
)
from search.cli import main

HEAD = {"NodeID": "aa" * 28, "Alive": True, "NodeManagerAddress": "10.0.0.1",
        "Resources": {"CPU": 8.0, "memory": 32 * 2**30, "object_store_memory": 8 * 2**30,
                      "node:10.0.0.1": 1.0, "node:__internal_head__": 1.0}}
GPU = {"NodeID": "bb" * 28, "Alive": True, "NodeManagerAddress": "10.0.0.2",
       "Resources": {"CPU": 192.0, "GPU": 8.0, "memory": 2048 * 2**30, "accelerator_type:H100": 1.0,
                     "das_worker": 2.0, "node:10.0.0.2": 1.0}}
DEAD = {"NodeID": "cc" * 28, "Alive": False, "NodeManagerAddress": "10.0.0.3",
        "Resources": {"CPU": 192.0, "GPU": 8.0}}


@pytest.mark.parametrize("address, kind", [(None, "local"), ("", "local"), ("auto", "auto"),
                                           ("10.0.0.1:6379", "gcs"), ("head.internal:6379", "gcs"),
                                           ("ray://10.0.0.1:10001", "client"), ("[::1]:6379", "gcs")])
def test_address_kinds(address, kind):
    assert address_kind(address) == kind


@pytest.mark.parametrize("address", ["head", "10.0.0.1", "10.0.0.1:99999", "http://head:6379", "ray://head"])
def test_a_malformed_address_names_the_accepted_forms(address):
    with pytest.raises(ClusterAddressError, match="must be 'auto', 'HOST:PORT' or 'ray://HOST:PORT'"):
        address_kind(address)


def test_an_auth_token_turns_token_mode_on_and_none_leaves_the_environment_alone():
    assert auth_environment(None) == {}
    assert auth_environment(" secret\n") == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "secret"}
    with pytest.raises(ClusterConnectError, match="auth_token must be the cluster's token"):
        auth_environment("  ")


def test_nothing_listening_fails_fast_without_starting_ray():
    with pytest.raises(ClusterConnectError, match="nothing answers at '127.0.0.1:1'"):
        connect("127.0.0.1:1")


def test_summary_sums_live_nodes_and_drops_bookkeeping():
    free = {HEAD["NodeID"]: {"CPU": 8.0, "memory": 30 * 2**30, "node:10.0.0.1": 1.0},
            GPU["NodeID"]: {"CPU": 100.0, "GPU": 3.0, "das_worker": 1.0, "CPU_group_0_abc": 4.0,
                            "bundle_group_abc": 1000.0}}
    status = summarize([GPU, DEAD, HEAD], free)
    assert [n.ip for n in status.nodes] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert status.nodes[0].head and not status.nodes[1].head and not status.nodes[2].alive
    assert status.total["CPU"] == 200 and status.total["GPU"] == 8 and status.total["das_worker"] == 2
    assert status.total["accelerator_type:H100"] == 1
    assert status.free == {"CPU": 108.0, "memory": 30 * 2**30, "GPU": 3.0, "das_worker": 1.0}
    text = format_status(status)
    assert "head 10.0.0.1" in text and "worker 10.0.0.3 cccccccc (dead)" in text
    assert "GPU 3 free of 8" in text and "memory 30.0 GiB free of 32.0 GiB" in text
    assert text.splitlines()[-1].startswith("cluster: 2 live nodes, CPU 108 free of 200")


def test_summary_without_free_resources_says_only_totals():
    status = summarize([HEAD], None)
    assert status.nodes[0].free is None and "free" not in format_status(status)


def test_cli_reports_a_bad_address_in_one_line(capsys):
    assert main(["cluster", "status", "--address", "head"]) == 2
    assert capsys.readouterr().err.strip().endswith("got 'head'")


def test_a_trial_no_node_can_hold_is_refused_with_the_totals():
    from cluster.ray_cluster import UnsatisfiableResources, check_fits

    status = summarize([GPU, DEAD, HEAD], None)
    check_fits({"CPU": 1, "GPU": 8}, status)  # the GPU node holds it
    with pytest.raises(UnsatisfiableResources, match=r"got CPU 1, GPU 9; the cluster has CPU 200, GPU 8, .*"
                                                     r"\(2 live nodes\)"):
        check_fits({"CPU": 1, "GPU": 9}, status)  # the dead node's 8 GPUs count for nothing
    with pytest.raises(UnsatisfiableResources, match=r"got CPU 1, accelerator_type_h100 1;"):
        check_fits({"CPU": 1, "accelerator_type_h100": 1}, status)
    check_fits({"CPU": 1, "GPU": 0}, status)  # asking for none of something is no request
