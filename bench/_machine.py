"""What the benchmarks record about the machine's load: one ``uptime`` line."""

from __future__ import annotations

import os
import subprocess


def uptime() -> str:
    """``uptime``'s line (time, up, users, load averages), or the load averages alone where the
    command is missing or hangs."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        la = os.getloadavg()
        return f"load average: {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f}"
