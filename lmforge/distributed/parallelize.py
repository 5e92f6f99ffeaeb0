"""Apply data parallelism and compilation to any model from the outside.

Models know nothing of parallelism: the trainer hands the bare module here and gets back the module
to call forward on. Under torchrun each rank holds a full replica (DDP, gradients all-reduced in
buckets during backward), or, with --train.fsdp, a shard of it (`fsdp.py`, applied before this);
`torch.compile` wraps the DDP module so its optimizer splits graphs at bucket boundaries and
overlaps communication with compute.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lmforge.distributed.fsdp import is_sharded
from lmforge.distributed.setup import DistributedContext


def parallelize(
    model: nn.Module,
    context: DistributedContext,
    *,
    compile: bool,
    unused_parameters: list[str] | tuple[str, ...] = (),
) -> nn.Module:
    """Wrap `model` for `context`; `unused_parameters` (names) get no gradient in forward, so DDP
    must not wait for them (it would fail on the next step) nor all-reduce them. A model sharded
    already (`fsdp.shard_model`) synchronises its own gradients: it is only compiled."""
    wrapped = model
    if context.world_size > 1 and not is_sharded(model):
        if unused_parameters:
            # A static ignore list is cheaper than find_unused_parameters=True, which walks the
            # autograd graph after every forward.
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, list(unused_parameters)
            )
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=device_ids)
    if compile:
        wrapped = torch.compile(wrapped)
    return wrapped
