"""Network namespaces: discovery, labels, and entering one from the calling thread.

The agent sees every namespace of the machine the way a hostPID DaemonSet does: through
``/proc/<pid>/ns/net`` (deduplicated by inode) and the bind mounts under ``/run/netns``.
Sockets opened while a thread is inside a namespace stay bound to it after the thread leaves,
so each namespace is entered once, to open its netlink sockets and /proc files, not on every
poll. Roots (``proc``, ``run_netns``) are arguments so tests can point at their own trees.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flowlens.model.errors import NamespaceError, PrivilegeError

CLONE_NEWNET = 0x40000000
HOST_LABEL = "host"

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class Netns:
    """One network namespace: its inode, its label and a path that opens it."""

    inode: int
    label: str
    path: str


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the body with the calling thread inside the namespace at ``path``."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as err:
            raise NamespaceError(f"network namespace {path} has vanished") from err
        except PermissionError as err:
            raise PrivilegeError(f"cannot open network namespace {path}: run as root") from err
        try:
            _setns(target)
        except PermissionError as err:
            raise PrivilegeError(
                f"cannot enter network namespace {path}: run as root or grant CAP_SYS_ADMIN"
            ) from err
        except OSError as err:
            raise NamespaceError(f"cannot enter network namespace {path}: {err.strerror}") from err
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def own_inode(proc: str = "/proc") -> int:
    """Inode of the namespace the calling process (its main thread) lives in."""
    return os.stat(f"{proc}/self/ns/net").st_ino


def discover(proc: str = "/proc", run_netns: str = "/run/netns") -> dict[int, Netns]:
    """Every network namespace reachable on this machine, keyed by inode.

    Named bind mounts win over process paths, so a pod sandbox keeps the label its runtime
    gave it even while processes come and go.
    """
    own = os.stat(f"{proc}/self/ns/net")
    host, nsfs = own.st_ino, own.st_dev
    found: dict[int, Netns] = {host: Netns(host, HOST_LABEL, f"{proc}/self/ns/net")}
    for name in _listdir(run_netns):
        path = os.path.join(run_netns, name)
        inode = _inode(path, nsfs)
        if inode and inode != host:
            found[inode] = Netns(inode, name, path)
    for pid in _listdir(proc):
        if not pid.isdigit():
            continue
        path = f"{proc}/{pid}/ns/net"
        inode = _inode(path, nsfs)
        if inode and inode not in found:
            found[inode] = Netns(inode, f"ino:{inode}", path)
    return found


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _inode(path: str, nsfs_dev: int) -> int:
    """The namespace inode behind ``path``, or 0 when it is not a live namespace we can see."""
    try:
        st = os.stat(path)
    except OSError:
        return 0
    # A /run/netns entry whose namespace is gone is a plain file left on the parent filesystem.
    return st.st_ino if st.st_dev == nsfs_dev else 0
