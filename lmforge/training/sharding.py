"""A model built sharded from the start (`--train.fsdp=true` under torchrun).

The model is built on the meta device, sharded block by block (`distributed/fsdp.py`), and only
then given storage and initialised, with the values `build_model` gives an unsharded model with the
same seed: no rank ever holds the whole model. Pretrained weights (`init_from`) are read in full
by each rank and cut to its shards.
"""

from __future__ import annotations

import os

from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from lmforge.config.model import ModelConfig
from lmforge.config.schema import TrainSection
from lmforge.distributed.fsdp import materialize, shard_model
from lmforge.distributed.setup import DistributedContext
from lmforge.errors import LmforgeError
from lmforge.models.lm import LanguageModel, build_model
from lmforge.run_dir import MODEL_FILE, resolve_checkpoint
from lmforge.training.precision import DTYPES


def build_sharded_model(
    cfg: ModelConfig, context: DistributedContext, train: TrainSection
) -> LanguageModel:
    """Build, shard (each transformer block, then the root) and initialise the model for this
    rank. bf16 runs gather parameters in bf16 and reduce gradients in fp32."""
    model = build_model(cfg, device="meta")
    blocks = [block for stack in model.stacks() for block in stack.blocks]
    param_dtype = DTYPES[train.precision] if train.precision == "bf16" else None
    shard_model(model, blocks, context, param_dtype=param_dtype, cpu_offload=train.fsdp_cpu_offload)
    materialize(model, context.device, model.init_weights)
    return model


def load_full_weights(path: str | os.PathLike[str], model: LanguageModel) -> None:
    """Load a checkpoint's model.safetensors (`init_from`) into the sharded `model`."""
    file = resolve_checkpoint(path) / MODEL_FILE
    if not file.is_file():
        raise LmforgeError(
            f"{file} is missing; consolidate the checkpoint first (lmforge convert --consolidate)"
        )
    state = load_file(file)
    try:
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
    except (RuntimeError, KeyError, ValueError) as error:
        reason = str(error).strip().splitlines()[0]
        raise LmforgeError(
            f"{file} does not match the model ({reason}); build the model from its "
            "model_config.json"
        ) from error
