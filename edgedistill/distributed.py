"""Data-parallel training across processes, started the standard way:

    torchrun --nproc_per_node N -m edgedistill compress ...      (multi-node: torchrun's --nnodes/--rdzv-*)

Every rank runs the same stages on the same seed; each trains on its shard of every epoch's permutation,
DistributedDataParallel averages the student's gradients, and epoch metrics are summed over ranks. Rank 0
alone writes files (run directory, checkpoints, artifacts, report); the others only compute. The run
directory must be on storage every rank can read (a shared file system across nodes)."""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> None:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def failures_shared():
    """Ends with a barrier that carries failures. A user error or refusal raised inside on any rank (rank 0
    alone runs preflight, export, bench and report while the others wait) is raised on every rank at the end,
    so each exits with the first failing rank's one-line message and exit code instead of dying in a broken
    collective with a traceback."""
    from edgedistill.errors import RefusedError, UserError

    error = None
    try:
        yield
    except (UserError, RefusedError) as e:
        if world_size() <= 1:
            raise
        error = e
    if world_size() <= 1:
        return
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, None if error is None else (isinstance(error, RefusedError), str(error)))
    first = next((g for g in gathered if g is not None), None)
    if error is not None:
        raise error
    if first is not None:
        refused, message = first
        raise (RefusedError if refused else UserError)(message)


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def average_gradients(params) -> None:
    """For parameters outside the DDP-wrapped model (a distillation task's projections)."""
    n = world_size()
    if n > 1:
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= n


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
