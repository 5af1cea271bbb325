"""Multi-node launches without launching: the cluster's torchrun arguments, each engine's command for one node of
several, the timeouts the runner sets, the refusals of runs it cannot carry, the lost-node message, and the
command line and `make recipe` variables that describe a node. The two-host runs: tests/test_multinode.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from ftkit.cli import main
from ftkit.cluster import COLLECTIVE_TIMEOUT_S, Cluster, lost_peers
from ftkit.engines.axolotl import AxolotlEngine
from ftkit.engines.base import StageContext
from ftkit.engines.trl import TrlEngine
from ftkit.errors import FtkitError

NODE1 = Cluster(nodes=2, node_rank=1, rdzv_host="10.0.0.1", rdzv_port=29411, rdzv_id="run7")


def ctx(tmp_path: Path, cluster: Cluster = NODE1, processes: int | None = 1, gpus: int = 0) -> StageContext:
    return StageContext("r", "sft", tmp_path, tmp_path, "cpu" if not gpus else "cuda", gpus, None, processes, cluster)


def after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_a_c10d_node_joins_the_rendezvous_on_node_zeros_address_with_the_runs_id():
    args = NODE1.torchrun_args(4)
    assert after(args, "--nnodes") == "2" and after(args, "--nproc_per_node") == "4"
    assert after(args, "--rdzv_backend") == "c10d" and after(args, "--rdzv_endpoint") == "10.0.0.1:29411"
    assert after(args, "--rdzv_id") == "run7" and after(args, "--max_restarts") == "0"
    assert after(args, "--rdzv_conf").startswith("join_timeout=")
    assert "--standalone" not in args and "--node_rank" not in args  # c10d numbers the nodes itself


def test_a_static_node_fixes_its_rank_and_meets_on_the_master_address():
    node = Cluster(nodes=3, node_rank=2, rdzv_host="algo-1", rdzv_port=7777, rendezvous="static")
    args = node.torchrun_args(8)
    assert after(args, "--node_rank") == "2" and after(args, "--master_addr") == "algo-1"
    assert after(args, "--master_port") == "7777" and "--rdzv_backend" not in args


def test_one_node_stays_standalone_on_a_free_port():
    assert Cluster().torchrun_args(2) == ["--standalone", "--nnodes", "1", "--nproc_per_node", "2"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"nodes": 0}, "nodes"), ({"nodes": 2, "node_rank": 2, "rdzv_host": "h"}, "node_rank"),
     ({"nodes": 2, "node_rank": 0}, "master_addr")],
)  # fmt: skip
def test_an_impossible_cluster_is_a_usage_error_naming_the_field(kwargs: dict, field: str):
    with pytest.raises(FtkitError) as err:
        Cluster(**kwargs)
    assert err.value.problems[0].field == field and "--node-rank" in (err.value.problems[0].fix or "")


def test_axolotl_on_one_node_of_two_runs_torchrun_with_the_clusters_arguments(tmp_path: Path):
    engine = AxolotlEngine()
    cmd = engine.command(tmp_path / "c.yaml", ctx(tmp_path))  # one process per node, two nodes: still torchrun
    assert after(cmd, "--launcher") == "torchrun"
    assert cmd[cmd.index("--") + 1 :] == NODE1.torchrun_args(1)
    assert engine.env(ctx(tmp_path))["OMP_NUM_THREADS"]  # the cores are shared by this node's ranks only


def test_trl_on_several_processes_runs_its_training_module_under_torchrun(tmp_path: Path):
    cmd = TrlEngine().command(tmp_path / "c.yaml", ctx(tmp_path, processes=2))
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert cmd[3 : cmd.index("-m", 3)] == NODE1.torchrun_args(2)
    assert cmd[cmd.index("-m", 3) + 1] == "ftkit.engines.trl_train"
    single = TrlEngine().command(tmp_path / "c.yaml", ctx(tmp_path, Cluster(), processes=1))
    assert single[1:3] == ["-m", "ftkit.engines.trl_train"]


def test_a_multi_node_run_sets_the_collective_timeout_unless_the_config_does(tmp_path: Path):
    assert AxolotlEngine().runtime_overrides({}, ctx(tmp_path))["ddp_timeout"] == COLLECTIVE_TIMEOUT_S
    assert "ddp_timeout" not in AxolotlEngine().runtime_overrides({"ddp_timeout": 60}, ctx(tmp_path))
    assert "ddp_timeout" not in AxolotlEngine().runtime_overrides({}, ctx(tmp_path, Cluster(), processes=2))
    assert TrlEngine().runtime_overrides({}, ctx(tmp_path))["trainer.ddp_timeout"] == COLLECTIVE_TIMEOUT_S


def test_trl_ranks_on_cpu_tell_accelerate_they_are_on_cpu_so_they_join_one_gloo_group(tmp_path: Path):
    assert TrlEngine().runtime_overrides({}, ctx(tmp_path))["trainer.use_cpu"] is True
    assert "trainer.use_cpu" not in TrlEngine().runtime_overrides({}, ctx(tmp_path, Cluster(), processes=1))


def test_the_world_size_counts_every_nodes_processes(tmp_path: Path):
    assert ctx(tmp_path, processes=4).world_size == 8
    assert ctx(tmp_path, Cluster(), processes=None, gpus=8).world_size == 8


def test_a_gloo_connection_error_names_the_peer_it_lost():
    log = ("[rank0]: RuntimeError: [../gloo/transport/tcp/pair.cc:537] Read error [10.77.7.2]:52373: Connection "
           "reset by peer. This is typically caused by a remote worker hanging\n"
           "Connection closed by peer [10.77.7.3]:29500\n")  # fmt: skip
    assert lost_peers(log) == ["10.77.7.2", "10.77.7.3"]
    assert lost_peers("loss 2.1\nstep 3") == []
    later_pattern_first = "Connection closed by peer [10.0.0.9]:1\nRead error [10.0.0.8]:2: Connection reset by peer"
    assert lost_peers(later_pattern_first) == ["10.0.0.9", "10.0.0.8"], "in order of first mention"


def test_a_failed_log_says_which_node_was_lost_or_that_the_nodes_never_all_joined():
    lost = NODE1.failure("Read error [10.0.0.2]:5: Connection reset by peer")
    assert lost is not None and lost[0] == "after losing contact with 10.0.0.2" and "--resume" in lost[2]
    timeout = NODE1.failure("torch.distributed.elastic.rendezvous.api.RendezvousTimeoutError")
    assert timeout is not None and "not all 2 nodes joined within 300 s" in timeout[1]
    assert NODE1.failure("CUDA out of memory") is None


def test_a_peer_this_machine_can_name_is_given_with_its_host_name():
    assert lost_peers("Read error [127.0.0.1]:1: Connection reset by peer") == ["127.0.0.1 (localhost)"]


def test_a_c10d_run_without_a_shared_checkpoint_dir_is_refused_before_anything_loads(capsys: pytest.CaptureFixture):
    code = main(["recipe", "run", "llama8b-full-fsdp", "--nodes", "2", "--master-addr", "10.0.0.1"])
    err = capsys.readouterr().err
    assert code == 2 and "--checkpoint-dir" in err and "shared storage" in err


def test_a_multi_node_run_of_a_recipe_whose_stage_starts_from_a_merged_model_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    code = main(["recipe", "run", "llama8b-qlora-dpo", "--nodes", "2", "--master-addr", "10.0.0.1",
                 "--checkpoint-dir", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "dpo" in err and "merged model" in err


def test_a_node_rank_outside_the_cluster_exits_2(capsys: pytest.CaptureFixture):
    assert main(["recipe", "run", "llama8b-full-fsdp", "--nodes", "2", "--node-rank", "2", "--master-addr", "h"]) == 2
    assert "node rank 2 is not in 0..1" in capsys.readouterr().err


def test_make_recipe_passes_a_nodes_variables_to_ftkit(tmp_path: Path):
    """scripts/recipe.sh with a fake ftkit that prints its arguments."""
    fake = tmp_path / "ftkit"
    fake.write_text('#!/bin/sh\necho "ARGS $*"\n')
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "FTKIT": str(fake), "LOCAL": "1"}
    done = subprocess.run(
        [str(ROOT / "scripts/recipe.sh"), "NAME=llama8b-full-fsdp", "PROFILE=smoke", "NODES=2", "NODE_RANK=1",
         "MASTER_ADDR=10.0.0.1", "MASTER_PORT=29411", "RDZV_ID=run7", "CHECKPOINT_DIR=/shared/c",
         f"RUNS_DIR={tmp_path / 'runs'}"],
        env=env, capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("ARGS"))
    assert "--nodes 2 --node-rank 1 --master-addr 10.0.0.1 --master-port 29411 --rdzv-id run7" in line
    assert "--checkpoint-dir /shared/c" in line


def test_a_profile_is_written_for_its_own_nodes_else_the_full_profile_for_the_recipes_hardware_nodes():
    from ftkit.pipeline.run import _profile_nodes
    from ftkit.recipes.load import load_recipe

    seventy = load_recipe("llama70b-full-fsdp", check_profiles=False, quick=True)
    assert seventy.recipe.hardware.nodes == 2
    assert _profile_nodes(seventy, "full") == 2 and _profile_nodes(seventy, "smoke") == 1
    assert _profile_nodes(load_recipe("llama8b-full-fsdp", check_profiles=False, quick=True), "full") == 1
