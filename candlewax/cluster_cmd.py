"""``candlewax run`` as a Bytewax cluster: ``-p N`` on this machine, or ``-a``/``-i`` (and
the StatefulSet environment) for one process of a cluster spread over machines.

- ``-p N``: this process starts N processes of one cluster on 127.0.0.1 (free ports),
  each ``candlewax run FILE -a ... -i K``, forwards Ctrl-C / SIGTERM to them and exits
  with the first failure's code.
- ``-a host:port,host:port,... -i K``: this process is member K of the cluster whose
  processes listen at those addresses (the same list, in the same order, everywhere).
- Neither: as ``python -m bytewax.run`` does in Bytewax's Helm chart, the index comes
  from ``BYTEWAX_PROCESS_ID`` or ``BYTEWAX_POD_NAME`` minus ``BYTEWAX_STATEFULSET_NAME-``,
  and the addresses from ``BYTEWAX_ADDRESSES`` (';'-separated) or the file at
  ``BYTEWAX_HOSTFILE_PATH`` (one per line). Without any of them: a single process.

YAML ``workers:`` stays the number of worker threads of each process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from candlewax.preflight import UserError

# After one process failed, the others get this long to end on SIGTERM before a SIGKILL.
_GRACE_S = 10.0


@dataclass(frozen=True)
class Cluster:
    addresses: list[str]
    index: int


def add_cluster_args(run: Any) -> None:
    group = run.add_argument_group(
        "cluster",
        "Spread the sources over processes of one Bytewax cluster (source i is read in "
        "process i mod N; each process computes its sources' symbols, nothing is exchanged "
        "but what goes to a file, terminal or websocket sink).",
    )
    group.add_argument("-p", "--processes", type=int, help="start N processes on this machine")
    group.add_argument(
        "-a",
        "--addresses",
        help="host:port of every process of the cluster, comma separated, in order "
        "(the same on every process)",
    )
    group.add_argument("-i", "--process-id", type=int, help="this process's index in -a")


def _address(text: str) -> str:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(
            f"bad cluster address {text.strip()!r}: expected host:port, e.g. 10.0.0.5:2101"
        )
    return f"{host}:{int(port)}"


def _addresses(text: str) -> list[str]:
    parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise UserError("no cluster addresses given: -a host:port,host:port,...")
    return [_address(p) for p in parts]


def _pod_index(env: Mapping[str, str]) -> int | None:
    pod, stateful_set = env.get("BYTEWAX_POD_NAME"), env.get("BYTEWAX_STATEFULSET_NAME")
    if not pod or not stateful_set:
        return None
    suffix = pod.removeprefix(f"{stateful_set}-")
    if suffix == pod or not suffix.isdigit():
        raise UserError(
            f"BYTEWAX_POD_NAME {pod!r} is not '{stateful_set}-<index>' "
            "(BYTEWAX_STATEFULSET_NAME): cannot tell this process's index"
        )
    return int(suffix)


def _hostfile(path: str) -> str:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise UserError(
            f"cannot read BYTEWAX_HOSTFILE_PATH {path!r}: {exc.strerror or exc}"
        ) from None
    return ",".join(line.strip() for line in lines if line.strip())


def cluster_of(args: Any, env: Mapping[str, str]) -> Cluster | None:
    """This process's place from ``-a``/``-i`` or the environment; None: no cluster."""
    index: int | None = args.process_id
    if index is None and env.get("BYTEWAX_PROCESS_ID", "").strip():
        given = env["BYTEWAX_PROCESS_ID"].strip()
        if not given.isdigit():
            raise UserError(f"BYTEWAX_PROCESS_ID {given!r} is not a process index (0, 1, ...)")
        index = int(given)
    if index is None:
        index = _pod_index(env)
    text: str | None = args.addresses
    if text is None and env.get("BYTEWAX_ADDRESSES"):
        text = env["BYTEWAX_ADDRESSES"]
    if text is None and index is not None and env.get("BYTEWAX_HOSTFILE_PATH"):
        text = _hostfile(env["BYTEWAX_HOSTFILE_PATH"])
    if index is None and text is None:
        return None
    if text is None:
        raise UserError(
            f"process index {index} given but no addresses: add -a host:port,host:port,... "
            "(or BYTEWAX_ADDRESSES / BYTEWAX_HOSTFILE_PATH)"
        )
    addresses = _addresses(text)
    if index is None:
        raise UserError("cluster addresses given but not this process's index: add -i <index>")
    if not 0 <= index < len(addresses):
        raise UserError(
            f"process index {index} is out of range for {len(addresses)} address(es): "
            f"use -i 0 to {len(addresses) - 1}"
        )
    return Cluster(addresses, index)


def check_processes(args: Any) -> int | None:
    """The ``-p`` count, refused in one line with ``-a``/``-i`` or below 1."""
    if args.processes is None:
        return None
    if args.addresses is not None or args.process_id is not None:
        raise UserError("-p starts a whole cluster here; -a/-i run one process of one: use either")
    if args.processes < 1:
        raise UserError(f"-p must be at least 1, got {args.processes}")
    return int(args.processes)


def free_addresses(count: int) -> list[str]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_listening(address: str, timeout_s: float = 5.0, alive: Any = None) -> None:
    """Until the process at ``address`` listens for its peers. Timely's workers connect to
    every lower process and retry only after a whole second, which would be timed; the
    listening socket is looked up in /proc/net/tcp (connecting to it would be taken for a
    peer). Without /proc the wait is a fixed 0.2 s."""
    port = f":{int(address.rsplit(':', 1)[1]):04X} "
    deadline = time.monotonic() + timeout_s
    table = Path("/proc/net/tcp")
    if not table.exists():
        time.sleep(0.2)
        return
    while time.monotonic() < deadline and (alive is None or alive.poll() is None):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if (fields[1] + " ").endswith(port) and fields[3] == "0A":  # 0A: LISTEN
                return
        time.sleep(0.001)


def launch(file: Path, processes: int, extra: list[str]) -> int:
    """Run ``candlewax run FILE`` as ``processes`` processes of one cluster on 127.0.0.1;
    the exit code of the first process that failed (0 if none)."""
    addresses = free_addresses(processes)
    command = [sys.executable, "-m", "candlewax.cli", "run", str(file), *extra]
    command += ["-a", ",".join(addresses)]
    children: list[subprocess.Popen[bytes]] = []
    for k in range(processes):
        children.append(
            subprocess.Popen(
                [*command, "-i", str(k)],
                # Own session: a Ctrl-C reaches them once, forwarded from here (the
                # terminal's copy as well would count as the second, aborting Ctrl-C).
                start_new_session=True,
            )
        )
        if k < processes - 1:
            # Timely connects to the lower processes and retries a refusal only after a
            # whole second (with a warning): start the next one once this one listens.
            wait_listening(addresses[k], timeout_s=30.0, alive=children[k])

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _wait(children)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def _wait(children: list[subprocess.Popen[bytes]]) -> int:
    """Every child's end; once one has failed, the others are ended too (a process that
    lost a peer, or waits for one that never came, would not end by itself)."""
    failed: int | None = None
    deadline: float | None = None
    while any(child.poll() is None for child in children):
        codes = [child.returncode for child in children if child.returncode not in (None, 0)]
        if codes and failed is None:
            failed = codes[0]
            for child in children:
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + _GRACE_S
        if deadline is not None and time.monotonic() > deadline:
            for child in children:
                if child.poll() is None:
                    child.kill()
        time.sleep(0.05)
    if failed is not None:
        return failed
    return next((c.returncode for c in children if c.returncode != 0), 0)


def environment() -> Mapping[str, str]:
    return os.environ
