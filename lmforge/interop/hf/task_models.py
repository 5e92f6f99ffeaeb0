"""Fine-tuned task models -> the transformers task classes (BertForSequenceClassification, ...).

A task model of ours is `backbone.*` (the pretrained model) plus a head (`head.proj`, a TaskHead).
Each family module lists, per kind of task model, the transformers class and where our head modules
go (`TASK_HEADS`):

    kind        our model                          transformers (BERT; RoBERTa; GPT-2, BLOOM)
    sequence    SequenceClassifier (classify)      ...ForSequenceClassification  classifier / score
    token       TaggingModel (tag)                 ...ForTokenClassification     classifier
    span        SpanExtractor (qa)                 ...ForQuestionAnswering       qa_outputs

The backbone maps onto the class's body through the family's key map (the body prefix is the same
in every class of a family). Backbone weights the task class has no place for (the pretraining head,
a pooler no head reads) are left out: our task model does not use them either. A head weight
without a place (a bias where transformers' `score` layer has none) cannot be represented: the
export is refused, naming it. config.json names the class (`architectures`), the labels
(`id2label`, `label2id`) and the head's dropout (`classifier_dropout`, where the class reads it).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import torch

from lmforge.config.model import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.interop.hf import family_for_config
from lmforge.interop.hf.convert import ours_to_hf_state_dict

_BACKBONE = "backbone."


def _task_class(family: ModuleType, kind: str) -> tuple[type, dict[str, str]]:
    """The transformers class of a `kind` task model of `family` and its head map."""
    import transformers

    heads = getattr(family, "TASK_HEADS", {})
    if kind not in heads:
        can = ", ".join(heads) or "none"
        raise LmforgeError(
            f"a fine-tuned {family.MODEL_TYPE} model with a {kind} head cannot be exported: "
            f"transformers has no class for it (heads that export: {can})"
        )
    class_name, modules = heads[kind]
    return getattr(transformers, class_name), modules


def _hf_config(
    family: ModuleType, cfg: ModelConfig, labels: Sequence[str], dropout: float | None
) -> object:
    hf_config = family.config_to_hf(cfg)
    hf_config.id2label = dict(enumerate(labels))
    hf_config.label2id = {label: i for i, label in enumerate(labels)}
    if dropout is not None and hasattr(hf_config, "classifier_dropout"):
        hf_config.classifier_dropout = dropout
    return hf_config


def _task_state_dict(
    family: ModuleType,
    cfg: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    modules: dict[str, str],
    expected: set[str],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the HF task model's state dict, our head weights it has no place for)."""
    backbone = {k[len(_BACKBONE) :]: v for k, v in state_dict.items() if k.startswith(_BACKBONE)}
    hf_sd = {k: v for k, v in ours_to_hf_state_dict(family, backbone, cfg).items() if k in expected}
    unplaced = []
    for key, tensor in state_dict.items():
        module, _, name = key.rpartition(".")
        target = f"{modules[module]}.{name}" if module in modules else None
        if target in expected:
            hf_sd[target] = tensor
        elif not key.startswith(_BACKBONE) or module in modules:
            unplaced.append(key)
    return hf_sd, unplaced


def build_hf_task_model(
    cfg: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    kind: str,
    labels: Sequence[str],
    *,
    dropout: float | None,
) -> torch.nn.Module:
    """The transformers task model (eval mode) holding our task model's `state_dict`.

    cfg: the backbone's config; kind: "sequence", "token" or "span"; labels: the label of each
    output (QA: start, end); dropout: the head's dropout rate (None: it has none).
    """
    family = family_for_config(cfg)
    task_class, modules = _task_class(family, kind)
    model = task_class(_hf_config(family, cfg, labels, dropout))
    hf_sd, unplaced = _task_state_dict(family, cfg, state_dict, modules, set(model.state_dict()))
    if unplaced:
        raise LmforgeError(
            f"this fine-tuned model cannot be exported as {task_class.__name__}: transformers' "
            f"class has no place for {', '.join(unplaced)}"
        )
    model.load_state_dict(hf_sd, strict=True)  # every weight of the class is ours
    return model.eval()
