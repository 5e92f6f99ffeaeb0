"""Apply data parallelism and compilation to any model from the outside.

Models know nothing of parallelism: the trainer hands the bare module here and gets back the module
to call forward on. Under torchrun each rank holds a full replica (DDP, gradients all-reduced in
buckets during backward); `torch.compile` wraps the DDP module so its optimizer splits graphs at
bucket boundaries and overlaps communication with compute.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lmforge.distributed.setup import DistributedContext


def parallelize(model: nn.Module, context: DistributedContext, *, compile: bool) -> nn.Module:
    wrapped = model
    if context.world_size > 1:
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=device_ids)
    if compile:
        wrapped = torch.compile(wrapped)
    return wrapped
