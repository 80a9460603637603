"""Which process this is: a plain process alone, or one rank of a ``torchrun`` job on a gloo process group.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` and, for its restarts,
``TORCHELASTIC_RESTART_COUNT``. The group is built on torchrun's own store (the agent's TCPStore when
``TORCHELASTIC_USE_AGENT_STORE`` says it hosts one, else rank 0 hosts it) under a prefix per run and attempt,
so workers restarted by ``--max-restarts`` meet in a fresh namespace instead of the keys their crashed
predecessors left behind. The ranks exchange only small objects (the work plan, the summary) and wait at one
barrier, so gloo serves CPU and GPU jobs alike; its timeout is a day, because a rank that finished early waits
at the final barrier for as long as the slowest rank still works (the 30-minute default would kill a healthy
job there).
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Callable, TypeVar

import torch

from ..errors import LrpcError

__all__ = ["PROCESS_GROUP_TIMEOUT", "Ranks", "join_ranks", "pick_device"]

PROCESS_GROUP_TIMEOUT = timedelta(hours=24)
STORE_CONNECT_TIMEOUT = timedelta(minutes=30)
T = TypeVar("T")


class Ranks:
    """This process's place in the job; ``share`` and ``barrier`` are no-ops for a single process."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, owns_group: bool = False):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self._owns_group = owns_group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, produce: Callable[[], T]) -> T:
        """Rank 0 runs ``produce()`` and every rank returns its result; if it raised, every rank raises."""
        if self.world_size == 1:
            return produce()
        import torch.distributed as dist

        failure = None
        message = [None]
        if self.is_main:
            try:
                message = [("result", produce())]
            except Exception as exc:  # every rank must hear of it, or the others would wait for ever
                failure = exc
                message = [("error", f"{exc}" if isinstance(exc, LrpcError) else f"{type(exc).__name__}: {exc}")]
        dist.broadcast_object_list(message, src=0)
        kind, value = message[0]
        if failure is not None:
            raise failure
        if kind == "error":
            raise LrpcError(f"rank 0 failed: {value}")
        return value

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist
            dist.barrier()

    def close(self) -> None:
        if self._owns_group:
            import torch.distributed as dist
            dist.destroy_process_group()
            self._owns_group = False

    def __enter__(self) -> "Ranks":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def join_ranks() -> Ranks:
    """This process's ranks from torchrun's environment (a single rank without it), with the group joined."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world_size == 1:
        return Ranks()
    import torch.distributed as dist

    if dist.is_initialized():  # the caller's own group (lrpc.explain_dataset inside a distributed script)
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise LrpcError(f"the initialised process group (rank {dist.get_rank()} of {dist.get_world_size()}) "
                            f"disagrees with RANK={rank} WORLD_SIZE={world_size}")
        return Ranks(rank, world_size, local_rank)
    address, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not address or not port:
        raise LrpcError(f"WORLD_SIZE={world_size} but MASTER_ADDR/MASTER_PORT are not set: start the ranks "
                        "with torchrun (python -m torch.distributed.run)")
    agent_hosts_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(address, int(port), world_size=world_size, is_master=rank == 0 and not agent_hosts_store,
                          timeout=STORE_CONNECT_TIMEOUT)
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.PrefixStore(f"lrpc-explain-dataset/{run_id}/attempt-{attempt}", store)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=PROCESS_GROUP_TIMEOUT)
    return Ranks(rank, world_size, local_rank, owns_group=True)


def pick_device(requested: str | None, ranks: Ranks) -> torch.device:
    """``None``/``"auto"``: this rank's GPU (``cuda:LOCAL_RANK``) when there is one, else the CPU; ``"cuda"``
    means this rank's GPU too; anything else is taken as given."""
    if requested in (None, "auto"):
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise LrpcError("device cuda was asked for, but torch sees no GPU")
        device = torch.device("cuda", ranks.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    try:
        return torch.device(requested)
    except RuntimeError as exc:
        raise LrpcError(f"unknown device {requested!r}: {exc}") from exc
