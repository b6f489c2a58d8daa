"""Shared test fixtures.

- ``shared_dir``: ``../shared`` beside the checkout (CI has it); tests that need it skip with
  a clear reason when it is absent.
- A network guard: any socket connection to a non-loopback address during a test fails the
  test, so hidden downloads (model hubs, datasets) cannot slip in.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BSDATA = SHARED / "datasets" / "bsdata"

_network_events: list[str] = []


def _is_loopback(host: object) -> bool:
    if isinstance(host, (bytes, bytearray)):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _audit(event: str, args: tuple) -> None:
    if event == "socket.connect":
        sock, addr = args[0], args[1]
        if getattr(sock, "family", None) == getattr(socket, "AF_UNIX", object()):
            return  # local IPC (multiprocessing forkserver, etc.)
        host = addr[0] if isinstance(addr, tuple) and addr else addr
        if not _is_loopback(host):
            _network_events.append(f"{event} {addr!r}")
    elif event == "socket.getaddrinfo":
        if not _is_loopback(args[0]):
            _network_events.append(f"{event} {args[0]!r}")


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _no_network():
    start = len(_network_events)
    yield
    new = _network_events[start:]
    if new:
        pytest.fail(f"test tried to reach the network: {new[:3]}")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found beside the checkout ({SHARED}); shared datasets unavailable")
    return SHARED


@pytest.fixture(scope="session")
def bsdata_dir() -> Path:
    if not (BSDATA / "split.csv").is_file():
        pytest.skip(f"BSData not found at {BSDATA} (CI provides ../shared/datasets/bsdata)")
    return BSDATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module: on 2 cores shared with other work, OpenMP
    spin-waiting made torch-heavy tests up to ~10x slower with more threads."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
