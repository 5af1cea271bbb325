"""Which node of a multi-node run this container is, from what each platform tells it: a `ftkit.cluster.Cluster`.

SageMaker writes `/opt/ml/input/config/resourceconfig.json` (`hosts`, sorted, `current_host`,
`network_interface_name`) on every instance of a job; RunPod's Instant Clusters set `NUM_NODES`, `NODE_RANK`,
`PRIMARY_ADDR`, `PRIMARY_PORT` and `NUM_TRAINERS` (GPUs per node) on every node, with the cluster network on
`ens1`. Both become a static rendezvous on node 0 (`ftkit recipe run --nodes … --rendezvous static`): the platform
numbers the nodes, so rank 0 is on node 0, which publishes, and each node keeps checkpoints on its own disk (SageMaker
syncs every instance's to one S3 prefix). Pure functions: the entrypoint reads the file and the environment. The
platform contract: docs/cloud.md, "SageMaker multi-instance".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ftkit.cluster import DEFAULT_PORT, SINGLE, Cluster
from ftkit.errors import FtkitError

RESOURCE_CONFIG = "resourceconfig.json"
JOB_NAME_ENV = "TRAINING_JOB_NAME"  # set by SageMaker in every container of a training job
RUNPOD_CLUSTER_NIC = "ens1"  # RunPod: PRIMARY_ADDR is on ens1; eth0 is the management interface
SOCKET_ENV = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


def cluster_from_resourceconfig(config: Any, job_name: str = "ftkit", source: str = RESOURCE_CONFIG) -> Cluster:
    """SageMaker's resourceconfig.json -> this instance's node of the job: node rank = the index of `current_host`
    in the sorted `hosts`, the rendezvous on the first host at the default port, the job name as rendezvous id
    (the same on every instance of one job, another for the next job). One host: `SINGLE`."""
    fix = "SageMaker writes this file itself: check the job's instance_count, or run the image outside SageMaker"
    if not isinstance(config, Mapping):
        raise FtkitError.one("resourceconfig.json is not a JSON object", file=source, fix=fix)
    hosts, current = config.get("hosts"), config.get("current_host")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise FtkitError.one(f"'hosts' is not a list of host names: {hosts!r}", file=source, field="hosts", fix=fix)
    if len(set(hosts)) != len(hosts):
        raise FtkitError.one(f"'hosts' names a host twice: {hosts}", file=source, field="hosts", fix=fix)
    if current not in hosts:
        raise FtkitError.one(
            f"'current_host' {current!r} is not one of 'hosts' {hosts}", file=source, field="current_host", fix=fix
        )
    if len(hosts) == 1:
        return SINGLE
    ordered = sorted(hosts)
    return Cluster(
        len(ordered), ordered.index(current), ordered[0], DEFAULT_PORT, job_name or "ftkit", rendezvous="static"
    )


def socket_env(interface: str | None) -> dict[str, str]:
    """GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME for the network the nodes share ({} when none is named)."""
    return dict.fromkeys(SOCKET_ENV, interface) if interface else {}


def sagemaker_nodes(config: Any, env: Mapping[str, str], source: str = RESOURCE_CONFIG) -> tuple[Cluster, dict]:
    """The cluster of a SageMaker job and the variables its ranks need (the socket interface from
    `network_interface_name`; one already set in `env` is kept). One instance: no variables."""
    cluster = cluster_from_resourceconfig(config, env.get(JOB_NAME_ENV, ""), source)
    if not cluster.multi:
        return cluster, {}
    extra = socket_env(config.get("network_interface_name"))
    return cluster, {k: v for k, v in extra.items() if k not in env}


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw and default is not None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise FtkitError.one(
            f"{name}={raw!r} is not a whole number",
            field=name,
            fix="RunPod sets NUM_NODES, NODE_RANK and PRIMARY_PORT on every node of an Instant Cluster; do not "
            "override them in the template",
        ) from None


def runpod_nodes(env: Mapping[str, str], run_id: str = "ftkit") -> tuple[Cluster, dict]:
    """The cluster of a RunPod Instant Cluster node (NUM_NODES > 1), else `SINGLE` (a single pod), and the socket
    interface for the cluster network (ens1) unless set."""
    nodes = _int(env, "NUM_NODES", 1)
    if nodes <= 1:
        return SINGLE, {}
    host = env.get("PRIMARY_ADDR") or env.get("MASTER_ADDR")
    if not host:
        raise FtkitError.one(
            f"NUM_NODES={nodes} but no PRIMARY_ADDR (or MASTER_ADDR): where is node 0?",
            field="PRIMARY_ADDR",
            fix="run the image on a RunPod Instant Cluster, which sets PRIMARY_ADDR on every node",
        )
    port = _int(env, "PRIMARY_PORT", DEFAULT_PORT)
    cluster = Cluster(nodes, _int(env, "NODE_RANK"), host, port, run_id, rendezvous="static")
    return cluster, {k: v for k, v in socket_env(RUNPOD_CLUSTER_NIC).items() if k not in env}
