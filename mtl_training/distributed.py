"""The process group of a torchrun launch and the rank helpers the training code uses.

`torchrun --nproc_per_node N -m mtl_training train ...` starts N copies of the command with
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT in their environment. `from_env`
reads them, `init` joins the group (nccl on CUDA, gloo on CPU) and picks each rank's GPU,
`Dist` is what the Trainer asks ("am I rank 0?", "average this", "my share of this epoch").
A plain `mtl-train train` sees no torchrun variables and gets `Dist.single()`: every helper is
then a no-op, so the one-process path runs exactly the code it ran before DDP existed.

What stays in sync and how (docs/training_at_scale.md):
- the network and the task-transfer nets: one DistributedDataParallel over both (gradients
  averaged in backward); BatchNorm statistics over the global batch (`sync_batchnorm`);
- the weighting's learned parameters (uncertainty log-variances) are in the optimiser, their
  gradients are averaged with `average_gradients`; the weighting's own state (GradNorm's weights,
  DWA's loss history) is averaged after every step with `average_state`;
- every rank walks the same seeded epoch order and takes its share (`shard`), so a global batch of
  N ranks x B samples is the one-process batch of N*B samples.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed import _functional_collectives as funcol  # differentiable collectives

from mtl_training.config import ConfigError

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
TIMEOUT = timedelta(minutes=30)  # a rank that waits longer than this for the others gives up


class DistributedError(ConfigError):
    """The torchrun environment is inconsistent or the process group cannot be joined (printed
    as one line by the apps, like any ConfigError)."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank, world size, local rank (its GPU on the node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def single(cls) -> Dist:
        return cls()

    @property
    def active(self) -> bool:
        """More than one process: collectives are needed."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory, logs and TensorBoard events."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum_(self, tensor: Tensor) -> Tensor:
        """In-place sum over ranks (a no-op for one process)."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def count(self, flags: Sequence[bool], device: torch.device) -> list[int]:
        """For each flag, on how many ranks it is true (one small all-reduce): `== world` is
        "every rank", `> 0` is "some rank", and every rank then takes the same branch."""
        if not self.active:
            return [int(bool(f)) for f in flags]
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [round(v) for v in t.tolist()]

    def mean_dict(self, sums: dict[str, float], counts: dict[str, int], keys: Iterable[str],
                  device: torch.device) -> dict[str, float]:
        """Means of running sums over every rank's samples; keys absent on every rank are left out.

        `keys` must be the same list on every rank (the union, gathered by the caller).
        """
        keys = list(keys)
        t = torch.tensor([[float(sums.get(k, 0.0)), float(counts.get(k, 0))] for k in keys],
                         dtype=torch.float64, device=device).reshape(-1, 2)
        self.sum_(t)
        return {k: float(s / c) for k, (s, c) in zip(keys, t.tolist(), strict=True) if c > 0}

    def union(self, names: Iterable[str]) -> list[str]:
        """Sorted union of string sets over ranks (loss term names a rank may not have seen)."""
        mine = sorted(set(names))
        if not self.active:
            return mine
        gathered: list[list[str] | None] = [None] * self.world
        dist.all_gather_object(gathered, mine)
        return sorted({n for part in gathered for n in (part or [])})

    def shard(self, order: Sequence[int]) -> list[int]:
        """This rank's share of an epoch's remaining sample order, as DistributedSampler deals it.

        The order is padded (by repeating its start) to a multiple of the world size, then dealt
        round-robin: rank r gets order[r::world]. With per-rank batch B, the k-th global batch is
        order[k*world*B:(k+1)*world*B], the same samples one process with batch world*B takes, and
        every rank gets the same number of samples (no rank waits for a step the others skip).
        """
        order = list(order)
        if not self.active or not order:
            return order
        pad = (-len(order)) % self.world
        padded = order + (order * (pad // len(order) + 1))[:pad]
        return padded[self.rank::self.world]


def from_env(environ: dict[str, str] | None = None) -> Dist:
    """The torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK), or one process when they are unset."""
    env = os.environ if environ is None else environ
    present = [k for k in ENV_KEYS if k in env]
    if not present:
        return Dist.single()
    if len(present) != len(ENV_KEYS):
        missing = [k for k in ENV_KEYS if k not in env]
        raise DistributedError(f"torchrun environment incomplete: {', '.join(present)} set but "
                               f"{', '.join(missing)} missing (launch with torchrun, or unset them)"
                               )
    try:
        rank, world, local = (int(env[k]) for k in ENV_KEYS)
    except ValueError as exc:
        raise DistributedError(f"torchrun environment: RANK/WORLD_SIZE/LOCAL_RANK must be "
                               f"integers ({exc})") from exc
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedError(f"torchrun environment: RANK={rank} WORLD_SIZE={world} "
                               f"LOCAL_RANK={local} is not a valid placement")
    return Dist(rank, world, local)


def current() -> Dist:
    """The placement of this process in an initialised process group, else one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist.single()
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(ctx: Dist, device: torch.device) -> torch.device:
    """Each rank's device: cuda:LOCAL_RANK on a GPU node, the resolved device otherwise.

    An explicit cuda:N under torchrun would put every rank on one GPU; it is refused.
    """
    if not ctx.active or device.type != "cuda":
        return device
    if device.index is not None:
        raise DistributedError(f"train.device: {device} pins every rank to one GPU; under "
                               "torchrun use cuda or auto (rank r takes cuda:LOCAL_RANK)")
    if torch.cuda.device_count() <= ctx.local_rank:
        raise DistributedError(f"LOCAL_RANK={ctx.local_rank} but this node has "
                               f"{torch.cuda.device_count()} GPU(s): lower --nproc_per_node")
    return torch.device("cuda", ctx.local_rank)


def init(ctx: Dist, device: torch.device) -> bool:
    """Join the process group of a torchrun launch (nccl on CUDA, gloo on CPU).

    Returns True when this call created the group (the caller then owns `shutdown`); False for
    one process or a group someone (a test, an outer script) already created.
    """
    if not ctx.active or dist.is_initialized():
        return False
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise DistributedError(f"torchrun environment: {', '.join(missing)} not set (launch with "
                               "torchrun, which sets them)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world, timeout=TIMEOUT,
                                **({"device_id": device} if device.type == "cuda" else {}))
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(f"cannot join the {backend} process group as rank {ctx.rank} of "
                               f"{ctx.world}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
                               ) from exc
    return True


def shutdown(owned: bool) -> None:
    """Leave the process group `init` created (a no-op otherwise)."""
    if owned and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(ctx: Dist, params: Iterable[nn.Parameter]) -> None:
    """Average .grad over ranks for parameters outside DDP (the weighting's); a rank whose loss
    did not reach a parameter contributes zeros, as DDP does for the network."""
    if not ctx.active:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


@torch.no_grad()
def average_state(ctx: Dist, module: nn.Module) -> None:
    """Average a module's floating parameters and buffers over ranks, ignoring non-finite entries
    (a GradNorm initial loss a rank has not set yet is NaN): every rank then holds the same
    weights, whatever its own shard of the batch did to them."""
    if not ctx.active:
        return
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    if not tensors:
        return
    flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
    finite = torch.isfinite(flat)
    both = torch.stack([torch.where(finite, flat, torch.zeros_like(flat)), finite.double()])
    dist.all_reduce(both, op=dist.ReduceOp.SUM)
    mean = torch.where(both[1] > 0, both[0] / both[1].clamp_min(1),
                       torch.full_like(flat, float("nan")))
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(mean[offset:offset + n].view_as(t).to(t.dtype))
        offset += n


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (every rank's
    samples), on any device and backend: per-channel sum, sum of squares and count are summed
    over ranks with a differentiable all-reduce, so the backward pass is that of one BatchNorm
    over the whole batch. torch.nn.SyncBatchNorm does the same on GPUs only; on CUDA
    `sync_batchnorm` uses it. Parameter and buffer names are BatchNorm2d's, so checkpoints load
    into the plain network unchanged.
    """

    def forward(self, x: Tensor) -> Tensor:  # [B, C, H, W]
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.float()
        n_local = torch.tensor([float(xf.numel() // xf.shape[1])], device=x.device)
        stats = torch.cat([xf.sum(dim=(0, 2, 3)), (xf * xf).sum(dim=(0, 2, 3)), n_local])
        stats = funcol.all_reduce(stats, "sum", dist.group.WORLD)  # [2C + 1], over ranks
        stats = funcol.wait_tensor(stats)
        c = x.shape[1]
        count = stats[-1]
        mean = stats[:c] / count
        var = (stats[c:2 * c] / count - mean * mean).clamp_min(0.0)  # biased, as BN normalises
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else \
                    1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var), alpha=m)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d of `module` computing global-batch statistics: torch.nn.SyncBatchNorm on
    CUDA (its fused kernels), GlobalBatchNorm2d elsewhere (gloo on CPU). In place; returned."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats).to(
                device=child.weight.device if child.affine else device)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            sync_batchnorm(child, device)
    return module
