"""Who a cloud job runs as, and whether it can write where the platform wants its results.

The images run as uid 1000. A platform that starts them as root anyway gets the same: the entrypoint hands the
job's folders to `FTKIT_RUN_AS` (uid:gid, set by the images) and continues as that user, so training never runs
as root. A platform that keeps uid 1000 but gives it folders it cannot write (a root-owned /opt/ml) gets one line
saying so, before any work, instead of a failure at the first checkpoint.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable, Mapping
from pathlib import Path

RUN_AS_ENV = "FTKIT_RUN_AS"


def parse_run_as(value: str) -> tuple[int, int]:
    """'1000:1000' (or '1000', the gid then equal to the uid) -> (uid, gid)."""
    uid, _, gid = value.strip().partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise ValueError(f"{RUN_AS_ENV}={value!r}: expected UID:GID, e.g. 1000:1000")
    return int(uid), int(gid or uid)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(top, name), uid, gid, follow_symlinks=False)


def drop_root(folders: Iterable[Path], env: Mapping[str, str]) -> tuple[int, int] | None:
    """When running as root with `FTKIT_RUN_AS` set: make the job's folders (created if missing) belong to that user,
    then switch this process (and so every process it starts) to it. Returns (uid, gid), or None (nothing done)."""
    if os.geteuid() != 0 or not env.get(RUN_AS_ENV):
        return None
    uid, gid = parse_run_as(env[RUN_AS_ENV])
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        _chown_tree(folder, uid, gid)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    try:
        os.environ["HOME"] = pwd.getpwuid(uid).pw_dir
    except KeyError:
        os.environ["HOME"] = "/tmp"
    return uid, gid


def first_unwritable(folders: Iterable[Path]) -> Path | None:
    """The first folder this process cannot write to (or, when missing, cannot create), else None."""
    for folder in folders:
        probe = folder if folder.exists() else next((p for p in folder.parents if p.exists()), Path("/"))
        if not os.access(probe, os.W_OK | os.X_OK):
            return folder
    return None


def unwritable_reason(folder: Path, platform: str) -> str:
    """One line: which folder, which user, and how to fix it."""
    return (
        f"{folder} is not writable by uid {os.getuid()} (the image's user) on {platform}: make the volume writable "
        f"by uid {os.getuid()}, or start the container as root (it hands the folders to uid {os.getuid()} and trains "
        f"as that user)"
    )
