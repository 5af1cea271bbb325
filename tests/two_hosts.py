"""Two hosts on one machine for multi-node tests: two network namespaces joined by a veth pair, each with its own
hostname (`unshare --uts`) and an /etc/hosts naming both (`/etc/netns/<ns>/hosts`, which `ip netns exec` mounts).

c10d's rendezvous tells nodes apart by hostname, so each host runs its commands under its own UTS namespace.
Traffic stays inside the namespaces; `TwoHosts.close` removes them and their /etc/netns files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

NETNS_ETC = Path("/etc/netns")


def unavailable() -> str | None:
    """Why two hosts cannot be made here (None when they can): root, `ip` and `unshare` are needed."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "unshare", "hostname"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"ftk-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    named = subprocess.run(["ip", "netns", "exec", probe, "unshare", "--uts", "hostname", "ftk-probe"],
                           capture_output=True, text=True)  # fmt: skip
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if named.returncode != 0:
        return f"a host of its own name cannot be made (`unshare --uts` + `hostname`): {named.stderr.strip()}"
    return None


@dataclass
class Host:
    name: str  # hostname inside its UTS namespace, also its name in the other host's /etc/hosts
    netns: str
    addr: str
    ifname: str  # its end of the veth pair (GLOO_SOCKET_IFNAME)

    def argv(self, cmd: list[str]) -> list[str]:
        """`cmd` run on this host: in its network namespace, under its own hostname."""
        script = 'hostname "$0" && exec "$@"'
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c", script, self.name, *cmd]

    def popen(self, cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start `cmd` on this host in its own process group (so a test can kill the whole node), output to `log`."""
        out = log.open("wb")
        return subprocess.Popen(self.argv(cmd), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip

    def kill_all(self) -> int:
        """SIGKILL every process in this host's network namespace: the node is lost. Returns how many."""
        return _kill_netns(self.netns)


class TwoHosts:
    """`with TwoHosts() as (a, b):` two namespaces `a.netns`, `b.netns`, 10.77.<n>.1 and .2 on a veth pair."""

    def __init__(self, tag: str | None = None, subnet: int | None = None) -> None:
        tag = tag or str(os.getpid())
        n = subnet if subnet is not None else 100 + os.getpid() % 100
        self.hosts = [
            Host(f"nodea{tag}", f"ftkA{tag}", f"10.77.{n}.1", f"vA{tag}"[:15]),
            Host(f"nodeb{tag}", f"ftkB{tag}", f"10.77.{n}.2", f"vB{tag}"[:15]),
        ]

    def __enter__(self) -> tuple[Host, Host]:
        a, b = self.hosts
        try:
            for h in self.hosts:
                _ip("netns", "add", h.netns)
                _ip("-n", h.netns, "link", "set", "lo", "up")
            _ip("link", "add", a.ifname, "netns", a.netns, "type", "veth", "peer", "name", b.ifname, "netns", b.netns)
            for h in self.hosts:
                _ip("-n", h.netns, "addr", "add", f"{h.addr}/24", "dev", h.ifname)
                _ip("-n", h.netns, "link", "set", h.ifname, "up")
                folder = NETNS_ETC / h.netns
                folder.mkdir(parents=True, exist_ok=True)
                names = "".join(f"{o.addr} {o.name}\n" for o in self.hosts)
                (folder / "hosts").write_text(f"127.0.0.1 localhost\n{names}", encoding="utf-8")
        except BaseException:
            self.close()
            raise
        return a, b

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for h in self.hosts:
            _kill_netns(h.netns)
            subprocess.run(["ip", "netns", "del", h.netns], capture_output=True)
            shutil.rmtree(NETNS_ETC / h.netns, ignore_errors=True)
        if NETNS_ETC.is_dir() and not any(NETNS_ETC.iterdir()):
            NETNS_ETC.rmdir()


def _kill_netns(netns: str) -> int:
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)
    return len(pids)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
