"""Launch ``torchrun --standalone`` for a test: its own process group, killed whole on a timeout.

``--standalone``: torchrun's c10d rendezvous binds a free port itself and keeps it, so no test picks a
port, releases it and hopes it is still free. One thread per process (``OMP_NUM_THREADS=1``): the
workers share the test machine's cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_torchrun(args: Sequence[str], *, nproc: int = 2, torchrun_args: Sequence[str] = (), timeout: float = 280,
                 env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node N [torchrun_args] ARGS`` from the
    repository root; returns the finished process (stdout/stderr as text). On a timeout torchrun and
    every worker are killed (the whole session) before ``TimeoutExpired`` is raised."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           *torchrun_args, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # a rank hung instead of stopping
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
