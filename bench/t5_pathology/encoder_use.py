"""Does an encoder-decoder's decoder use what its encoder read? (issue 12, the T5 pathology)

For a pretrained checkpoint and the same architecture freshly initialised, on validation windows
of the pretraining data: the span-corruption loss (nats per target token) with each row's own
encoder input, with another row's (the batch rolled by one) and with a blank one (all EOS); and how
alike the encoder's outputs are (mean cosine between positions of four Multi30k sentences, and the
share of their norm along the common direction). A decoder that reads the encoder loses far more
with another row's input than with its own; one that learned an unconditional language model
loses about the same.

    python bench/t5_pathology/encoder_use.py CHECKPOINT [CHECKPOINT ...] --data DATA_DIR [--full]
        [--seq-len 256]
"""

from __future__ import annotations

import argparse

import torch

from lmforge.data.shards import TokenDataset
from lmforge.data.windows import WindowSampler
from lmforge.models.pretrained import load_pretrained
from lmforge.objectives.span_corruption import SpanCorruption

SENTENCES = (
    "A group of men are loading cotton onto a truck",
    "A man sleeping in a green room on a couch.",
    "A boy wearing headphones sits on a woman's shoulders.",
    "Two dogs run through the snow.",
)


@torch.no_grad()
def losses(model, batch: dict[str, torch.Tensor], eos_id: int) -> dict[str, float]:
    def loss(inputs: torch.Tensor) -> float:
        out = model(**dict(batch, input_ids=inputs))
        return float(out.loss_sum / out.num_targets)

    own = batch["input_ids"]
    return {
        "own": loss(own),
        "another row's": loss(own.roll(1, 0)),
        "blank": loss(torch.full_like(own, eos_id)),
    }


@torch.no_grad()
def anisotropy(model, tokenizer) -> tuple[float, float]:
    ids = [tokenizer.encode(text) + [tokenizer.eos_id] for text in SENTENCES]
    length = min(len(row) for row in ids)
    states = model.hidden_states(torch.tensor([row[:length] for row in ids]))
    flat = states.reshape(-1, states.shape[-1])
    unit = torch.nn.functional.normalize(flat, dim=1)
    cosines = unit @ unit.T
    mean_cos = cosines[~torch.eye(len(flat), dtype=torch.bool)].mean().item()
    common = (flat.mean(0).norm() / flat.norm(dim=1).mean()).item()
    return mean_cos, common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", required=True, help="the prepared pretraining data directory")
    parser.add_argument("--full", action="store_true", help="score the full-text target instead")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256, help="encoder length of the windows")
    args = parser.parse_args()
    print("| checkpoint | init | loss, own input | another row's | blank | cos | common |")
    print("|---|---|---|---|---|---|---|")
    for index, path in enumerate(args.checkpoints):
        for init in ("random", "pretrained") if index == 0 else ("pretrained",):
            model, tokenizer, _ = load_pretrained(path, init=init)
            objective = SpanCorruption(tokenizer, args.data, full_target=args.full)
            sampler = WindowSampler(
                TokenDataset(args.data, "val"),
                objective.raw_length(args.seq_len),
                seed=0,
                shuffle=False,
            )
            windows = torch.stack(
                [torch.as_tensor(sampler.window(i)).long() for i in range(args.rows)]
            )
            batch = objective.make_batch(windows, torch.Generator().manual_seed(0))
            scores = losses(model, batch, tokenizer.eos_id)
            cos, common = anisotropy(model, tokenizer)
            cells = " | ".join(f"{value:.3f}" for value in scores.values())
            print(f"| {path} | {init} | {cells} | {cos:.3f} | {common:.3f} |")


if __name__ == "__main__":
    main()
