"""DistributedDataParallel plumbing for ``seg-train train`` under ``torchrun``.

Every helper is a no-op for a single process (``WORLD_SIZE`` unset or 1), so the training loop calls
them unconditionally. The process group is destroyed by the caller (``training.cli``) once training
returns.

Failure of one rank: under torchrun a rank that raises prints ``error: rank R/W: ...`` and exits 1.
With gloo, the collectives of the other ranks then fail at once ("connection closed by peer"), and
torchrun also stops them with SIGTERM when it sees a worker exit; either way they print
``error: rank R/W: stopped because another rank failed`` and exit 1 too (:func:`is_peer_failure`,
:func:`stop_on_sigterm`), and torchrun exits 1 naming the first failed rank.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = [
    "DistEnv", "dist_env", "init_distributed", "wrap_model", "barrier", "mean_over_ranks", "rank_prefix", "is_peer_failure",
    "StoppedByLauncher", "stop_on_sigterm", "share_from_main", "ignore_sigterm",
]


@dataclass(frozen=True)
class DistEnv:
    """This process's place among the ``torchrun`` workers."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_env() -> DistEnv:
    """Rank information from ``torchrun``'s environment (defaults: one process)."""
    e = os.environ
    return DistEnv(
        int(e.get("RANK", 0)), int(e.get("WORLD_SIZE", 1)), int(e.get("LOCAL_RANK", 0)), int(e.get("LOCAL_WORLD_SIZE", e.get("WORLD_SIZE", 1)))
    )


def init_distributed(env: DistEnv, device: str) -> None:
    """Join the process group (NCCL on CUDA, gloo otherwise) unless single-process or already joined.

    Args:
        env: this process's rank information.
        device: the ``--device`` setting; ``"cpu"`` forces gloo even where CUDA is available.
    """
    if env.distributed and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        torch.distributed.init_process_group(backend=backend)


def wrap_model(net: torch.nn.Module, env: DistEnv, device: torch.device) -> torch.nn.Module:
    """``net`` wrapped in DistributedDataParallel when distributed, else ``net`` itself."""
    if not env.distributed:
        return net
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def barrier(env: DistEnv) -> None:
    """Wait for every rank (distributed only)."""
    if env.distributed:
        torch.distributed.barrier()


def mean_over_ranks(value: float, env: DistEnv, device: torch.device) -> float:
    """The mean of ``value`` over all ranks (``value`` itself for one process)."""
    if not env.distributed:
        return value
    t = torch.tensor([value], device=device)
    torch.distributed.all_reduce(t)
    return float(t.item()) / env.world_size


# ---- failures ---------------------------------------------------------------------------------------------
class StoppedByLauncher(BaseException):
    """SIGTERM from torchrun (it stops the other workers when one fails). A BaseException, so no
    ``except Exception`` in the training code swallows it."""


def rank_prefix() -> str:
    """``"rank R/W: "`` under torchrun with more than one process, else ``""`` (for error lines)."""
    env = dist_env()
    return f"rank {env.rank}/{env.world_size}: " if env.distributed else ""


def is_peer_failure(exc: BaseException) -> bool:
    """True when ``exc`` says a collective broke because another process went away."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(s in text for s in ("connection closed by peer", "connection reset", "broken pipe", "distbackenderror",
                                   "distnetworkerror", "connection refused", "timed out"))


@contextlib.contextmanager
def stop_on_sigterm(enabled: bool = True) -> Iterator[None]:
    """Turn SIGTERM into :class:`StoppedByLauncher` while the block runs (main thread only); once an
    exception leaves the block, SIGTERM is ignored (the process is about to print why and exit)."""
    if not enabled or not hasattr(signal, "SIGTERM"):
        yield
        return

    def handler(signum, frame):  # noqa: ANN001 - signal handler signature
        raise StoppedByLauncher()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    except BaseException:
        # failing: ignore torchrun's SIGTERM from now on, so this rank's own error line is printed
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise
    signal.signal(signal.SIGTERM, previous)


def ignore_sigterm() -> None:
    """Ignore SIGTERM from now on (a rank that is about to report an error first; main thread only)."""
    with contextlib.suppress(ValueError, AttributeError):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def share_from_main(value, env: DistEnv):  # noqa: ANN001, ANN201 - any picklable value
    """Rank 0's ``value`` on every rank (``broadcast_object_list``; ``value`` itself for one process)."""
    if not env.distributed:
        return value
    box = [value if env.is_main else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
