"""Fully sharded data parallelism (FSDP2, `torch.distributed.fsdp.fully_shard`), from the outside.

Under DDP each rank holds the whole model, its gradients and its optimizer state; under FSDP each
rank holds 1/world_size of each parameter (a `DTensor` sharded on dim 0), all-gathers a unit's
parameters just before the unit runs (forward, and again in backward) and reduce-scatters its
gradients after backward. Units are the transformer blocks, then the root (embeddings, positions,
norms, head): tied weights live in one unit, since the tied head reads `token_embed.weight` from
the root at call time. Like `parallelize.py`, this module never imports a model family; the caller
names the units.

Meta-device initialisation (`materialize`): the model is built on `meta`, sharded, given real
(uninitialised) shards with `to_empty`, and then initialised by the model's own `init_weights()`,
each parameter drawn in full, one at a time, and cut to this rank's shard (`_FullParameterInit`),
so the values equal an unsharded build's with the same seed while no rank ever holds more than one
full parameter. (DTensor's own random ops cannot promise that on the CPU: they draw each shard
from the local generator.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.parallel import DistributedDataParallel
from torch.overrides import TorchFunctionMode

from lmforge.distributed.setup import DistributedContext


def shard_model(
    model: nn.Module,
    units: Iterable[nn.Module],
    context: DistributedContext,
    *,
    param_dtype: torch.dtype | None,
    cpu_offload: bool,
) -> nn.Module:
    """Shard each of `units` (the transformer blocks), then `model` itself, over all ranks; return
    `model` (changed in place: FSDP2 swaps its parameters for sharded DTensors).

    `param_dtype` (bf16, or None for fp32): the dtype parameters are gathered in for forward and
    backward; gradients are always reduced in fp32, so the sum over ranks loses no precision.
    """
    mesh = init_device_mesh(context.device.type, (context.world_size,))
    policy = MixedPrecisionPolicy(
        param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None
    )
    # Pinned host memory makes the copies to the GPU asynchronous; without CUDA there is none.
    offload = (
        CPUOffloadPolicy(pin_memory=context.device.type == "cuda")
        if cpu_offload
        else OffloadPolicy()
    )
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy, offload_policy=offload)
    fully_shard(model, mesh=mesh, mp_policy=policy, offload_policy=offload)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether `model` (or the module a `torch.compile` wrapper holds) is FSDP-sharded."""
    return isinstance(getattr(model, "_orig_mod", model), FSDPModule)


def gradient_sync(model: nn.Module, *, enabled: bool) -> contextlib.AbstractContextManager:
    """Enter around the forward pass of a micro-batch; `enabled=False` for all but the last
    micro-batch of an optimizer step, so gradients are synchronised once per step.

    DDP decides in forward whether backward all-reduces, so its `no_sync()` context covers the
    forward pass. FSDP reads its flag in backward, which runs after the context has closed, so the
    flag is set here and left set: the next micro-batch sets it again, the last one to True.
    """
    module = getattr(model, "_orig_mod", model)  # under torch.compile
    if isinstance(module, FSDPModule):
        module.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()
    if isinstance(module, DistributedDataParallel) and not enabled:
        return module.no_sync()
    return contextlib.nullcontext()


def materialize(model: nn.Module, device: torch.device, init_weights: Callable[[], None]) -> None:
    """Give the sharded meta `model` real storage on `device` and initialise it by calling
    `init_weights()` (the model's own), with the values an unsharded build would get."""
    model.to_empty(device=device)
    with _FullParameterInit(model):
        init_weights()


class _FullParameterInit(TorchFunctionMode):
    """Runs every torch function that touches a sharded parameter on a full-size stand-in instead,
    and writes the stand-in's shard back when initialisation moves on to the next parameter.

    The stand-in has the parameter's global shape, dtype and device, so a random draw into it
    consumes the generator exactly as the unsharded model's draw does: the same values, in the
    same order. Every rank draws every parameter in full and keeps its own part. A parameter
    touched again later (T5 scales rows after drawing them) is gathered back in full first.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.sharded = {id(p): p for p in model.parameters() if isinstance(p, DTensor)}
        self.current: tuple[DTensor, torch.Tensor] | None = None
        self.written: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        params = [a for a in (*args, *kwargs.values()) if id(a) in self.sharded]
        if not params:
            return func(*args, **kwargs)
        # Initialisation touches one parameter at a time (a weight, then its bias).
        assert len({id(p) for p in params}) == 1, f"{func} touches two sharded parameters"
        param = params[0]
        full = self._stand_in(param)
        args = tuple(full if id(a) in self.sharded else a for a in args)
        kwargs = {k: full if id(v) in self.sharded else v for k, v in kwargs.items()}
        result = func(*args, **kwargs)
        # In-place ops return their input: `module.weight *= s` assigns the result back to the
        # module, which must keep its parameter.
        return param if result is full else result

    def _stand_in(self, param: DTensor) -> torch.Tensor:
        if self.current is not None and self.current[0] is param:
            return self.current[1]
        self._write_back()
        if id(param) in self.written:
            full = param.full_tensor()
        else:
            # Like the unsharded model after to_empty: uninitialised memory, which init overwrites.
            full = torch.empty(param.shape, dtype=param.dtype, device=param.to_local().device)
        self.current = (param, full)
        return full

    def _write_back(self) -> None:
        if self.current is None:
            return
        param, full = self.current
        # src_data_rank=None: every rank holds the same full tensor, so each cuts its shard
        # locally instead of receiving it from rank 0.
        shard = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
        with torch.no_grad():
            param.to_local().copy_(shard.to_local())
        self.written.add(id(param))
        self.current = None

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self._write_back()
        finally:
            super().__exit__(*exc)
