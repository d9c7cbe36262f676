"""Process-group setup, device choice and signal handling for jobs launched with torchrun.

One code path for 1 CPU process, N CPU processes (gloo) and N GPUs (NCCL): the launcher's environment
(RANK, WORLD_SIZE, LOCAL_RANK) decides, the config decides whether a missing GPU is an error.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def select_device(device: str = "auto", want_gpu: bool = False, allow_cpu_fallback: bool = True,
                  local_rank: int = 0) -> torch.device:
    """Pick the device: CUDA when asked for (or auto and visible).

    A job that asks for a GPU (device 'cuda' or GPU resources) and finds none fails with a clear message
    unless allow_cpu_fallback (compute.allow_cpu_fallback) says that CPU is acceptable; the fallback is logged.
    """
    has_cuda = torch.cuda.is_available()
    if device == "cpu":
        return torch.device("cpu")
    if has_cuda and (device in ("cuda", "auto")):
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    wanted = device == "cuda" or want_gpu
    if wanted and not allow_cpu_fallback:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise InputError("this job requested a GPU but torch finds none "
                         f"(CUDA_VISIBLE_DEVICES={visible}); set compute.allow_cpu_fallback: true to run on CPU")
    if wanted:
        log.warning("GPU requested but none is usable (CUDA_VISIBLE_DEVICES=%s): falling back to CPU "
                    "because compute.allow_cpu_fallback is true", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    return torch.device("cpu")


def config_device(config: dict, want_gpu: bool = False, local_rank: int = 0) -> torch.device:
    """select_device with compute.device and compute.allow_cpu_fallback of the workflow config."""
    compute = config["compute"]
    return select_device(compute["device"], want_gpu, compute["allow_cpu_fallback"], local_rank)


def check_gpu_count(dev: torch.device, local_processes: int) -> None:
    """One process per GPU: a job that starts more processes on a node than torch sees GPUs there (e.g.
    finetune.gpus: 4 on a 2-GPU workstation) stops instead of stacking ranks on the same device."""
    if dev.type != "cuda":
        return
    have = torch.cuda.device_count()
    if local_processes > have:
        raise InputError(f"this job starts {local_processes} processes, one per GPU (finetune.gpus), but torch "
                         f"sees {have} GPU(s) here (CUDA_VISIBLE_DEVICES="
                         f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); set finetune.gpus to at most {have}")


def init(config: dict, want_gpu: bool = False) -> Dist:
    """Initialise torch.distributed from torchrun's environment (no-op for a single process) on the
    device the config's compute section selects."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = config_device(config, want_gpu, local_rank)
    check_gpu_count(dev, int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d on %s (%s)", rank, world_size, dev, backend)
    return Dist(rank, world_size, local_rank, dev)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def all_reduce_sum_(tensors, d: Dist) -> None:
    """Sum tensors (e.g. each rank's share of a gradient) over ranks in place."""
    if not d.enabled:
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def all_gather(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """Concatenate x (same shape on every rank) from every rank along dim 0, in rank order; no gradient."""
    if not d.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(d.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def gather_rows(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """all_gather(x) with this rank's own rows in place as x itself (the others without gradient): a loss of
    the gathered batch back-propagates into this rank's rows only."""
    if not d.enabled:
        return x
    parts = list(all_gather(x.detach(), d).split(x.shape[0]))
    parts[d.rank] = x
    return torch.cat(parts, dim=0)


class StopSignal:
    """Turns SIGTERM/SIGUSR1 (what SLURM sends before preemption or time-out) into a flag.

    The training loop checks `requested` between steps, writes a checkpoint and exits cleanly.
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGUSR1)):
        self.requested: int | None = None
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        log.warning("received signal %d: will checkpoint and stop after the current step", signum)
        self.requested = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
