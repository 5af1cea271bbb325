"""Which node of a multi-node run this machine is, and where the nodes meet: torchrun's c10d rendezvous.

One `Cluster` per run. Every node runs the same recipe with the same cluster but its own `node_rank`; torchrun's
c10d rendezvous on `rdzv_host:rdzv_port` (node 0's address) joins them. Where the numbers come from: the command
line (`ftkit recipe run --nodes 2 --node-rank R --master-addr A`, `make recipe NODES=…`), SageMaker's
resourceconfig.json and SkyPilot's node variables (`ftkit.cloud`). We never launch nodes ourselves.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Literal

from ftkit.errors import FtkitError

DEFAULT_PORT = 29400
# How long torchrun waits for every node to join (c10d `join_timeout`), and the process group's collective timeout:
# a node that never comes, or a peer that stops answering, ends the run with an error instead of a hang.
JOIN_TIMEOUT_S = 300
COLLECTIVE_TIMEOUT_S = 600


@dataclass(frozen=True)
class Cluster:
    nodes: int = 1
    node_rank: int = 0
    rdzv_host: str | None = None  # node 0's address (MASTER_ADDR); needed when nodes > 1
    rdzv_port: int = DEFAULT_PORT
    rdzv_id: str = "ftkit"  # the same on every node of one run, distinct between runs sharing a host
    # c10d: nodes join in any order and torchrun numbers them (global rank 0 may be on any node), so every node's
    # checkpoint dir must be the same storage. static: `--node_rank` fixes the order, rank 0 is on node 0 (SageMaker's
    # own torchrun launch), and each node may keep its checkpoints on its own disk.
    rendezvous: Literal["c10d", "static"] = "c10d"
    join_timeout_s: int = JOIN_TIMEOUT_S
    collective_timeout_s: int = COLLECTIVE_TIMEOUT_S

    def __post_init__(self) -> None:
        fix = "give --nodes N, --node-rank 0..N-1 and --master-addr (node 0's address), the same on every node"
        if self.nodes < 1:
            raise FtkitError.one(f"nodes must be at least 1, got {self.nodes}", field="nodes", fix=fix)
        if not 0 <= self.node_rank < self.nodes:
            bad = f"node rank {self.node_rank} is not in 0..{self.nodes - 1}"
            raise FtkitError.one(bad, field="node_rank", fix=fix)
        if self.nodes > 1 and not self.rdzv_host:
            raise FtkitError.one(f"a {self.nodes}-node run needs the rendezvous address", field="master_addr", fix=fix)

    @property
    def multi(self) -> bool:
        return self.nodes > 1

    @property
    def is_main(self) -> bool:
        """Node 0: the node that writes history, metrics, merged models and the report."""
        return self.node_rank == 0

    def world_size(self, processes: int) -> int:
        return self.nodes * processes

    def torchrun_args(self, processes: int) -> list[str]:
        """torchrun's arguments for `processes` ranks per node: `--standalone` on one node (a free local port, so two
        runs on one machine do not collide), else the c10d or static rendezvous every node joins."""
        if not self.multi:
            return ["--standalone", "--nnodes", "1", "--nproc_per_node", str(processes)]
        common = ["--nnodes", str(self.nodes), "--nproc_per_node", str(processes), "--max_restarts", "0"]
        if self.rendezvous == "static":
            return [*common, "--node_rank", str(self.node_rank), "--master_addr", str(self.rdzv_host),
                    "--master_port", str(self.rdzv_port)]  # fmt: skip
        return [*common, "--rdzv_backend", "c10d", "--rdzv_endpoint", f"{self.rdzv_host}:{self.rdzv_port}",
                "--rdzv_id", self.rdzv_id, "--rdzv_conf", f"join_timeout={self.join_timeout_s}"]  # fmt: skip

    def describe(self) -> str:
        if not self.multi:
            return "one node"
        where = f"{self.rdzv_host}:{self.rdzv_port}"
        return f"node {self.node_rank} of {self.nodes}, {self.rendezvous} rendezvous {where} ({self.rdzv_id})"

    def failure(self, log: str) -> tuple[str, str, str] | None:
        """What a failed training log says about the nodes: (the error title's ending, the problem, its fix) when a
        peer was lost or the nodes never all joined; None when the log names neither."""
        if lost := lost_peers(log):
            names = ", ".join(lost)
            return (f"after losing contact with {names}",
                    f"{self.describe()}: the connection to {names} broke (that node stopped, was killed or became "
                    "unreachable)", "read that node's log, then restart every node with --resume")  # fmt: skip
        if "RendezvousTimeoutError" in log:
            return ("before every node joined",
                    f"{self.describe()}: not all {self.nodes} nodes joined within {self.join_timeout_s} s",
                    "start every node with the same --nodes, --master-addr, --master-port and --rdzv-id, and check "
                    "that node 0's port is reachable from the others")  # fmt: skip
        return None

    def to_dict(self) -> dict[str, object]:
        return {"nodes": self.nodes, "node_rank": self.node_rank, "rendezvous": self.rendezvous,
                "rdzv_endpoint": f"{self.rdzv_host}:{self.rdzv_port}" if self.multi else None,
                "rdzv_id": self.rdzv_id if self.multi else None}  # fmt: skip


SINGLE = Cluster()


# gloo: "Read error [10.0.0.2]:52373: Connection reset by peer", "Connection closed by peer [10.0.0.2]:29500";
# NCCL: "... Connection closed by remote peer node-b<42045>" / "remote process exited ... peer 10.0.0.2".
_LOST = (
    re.compile(r"\[([0-9A-Fa-f.:]+)\]:\d+: Connection (?:reset|closed|refused)"),
    re.compile(r"Connection closed by (?:remote )?peer \[?([\w.:-]+?)\]?(?::\d+|<\d+>)"),
    re.compile(r"remote process exited.*?peer ([\w.:-]+)"),
)


def lost_peers(log: str) -> list[str]:
    """The peers a training log says it lost (gloo's and NCCL's connection errors), in order of first mention, each
    with its host name where this machine can resolve it: `10.0.0.2 (node-b)`."""
    mentions = sorted((m.start(), m.group(1)) for pattern in _LOST for m in pattern.finditer(log))
    return [_with_name(peer) for peer in dict.fromkeys(peer for _, peer in mentions)]


def _with_name(addr: str) -> str:
    try:
        name = socket.gethostbyaddr(addr)[0]
    except (OSError, UnicodeError):
        return addr
    return addr if name == addr else f"{addr} ({name})"
