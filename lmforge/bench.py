"""Training-throughput benchmark of our decoder models, optionally against HF `transformers`.

One training step = forward + loss + backward + AdamW step + zero_grad, on a fixed random batch.
Both sides get the same shape, the same initial weights (ours exported through `interop.hf`),
dropout 0, the same batch, weights in fp32 and, for bf16, `torch.autocast("cpu", torch.bfloat16)`
around the forward pass and loss. Our optimizer is `training.optim.build_optimizer` (fused AdamW);
HF's is a plain `torch.optim.AdamW` with its defaults (on CPU: the single-tensor for-loop
implementation), which is what an HF training script gets unless it asks for more.

FLOP/s use `training.flops.training_flops_per_token` (Kaplan et al. 2020 / PaLM appendix B: 6 x
matmul parameters, lm head included, + 12 x layers x d_model x seq_len for attention), the same
definition as the trainer's `mfu`; the fraction is taken of the matmul peak measured at run time in
the benchmark's precision. The timing loop never lives in tests.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from multiprocessing.connection import Connection

import torch

from lmforge.config.model import ModelConfig, TokenIdsConfig
from lmforge.config.presets import get_preset
from lmforge.errors import LmforgeError
from lmforge.kernels.allocator import keep_freed_memory
from lmforge.models.heads import IGNORE_INDEX
from lmforge.models.lm import build_model
from lmforge.training.flops import measure_matmul_peak, training_flops_per_token
from lmforge.training.optim import build_optimizer
from lmforge.training.precision import DTYPES, Precision

DEFAULT_MODELS = (
    "gpt2-tiny", "gpt2-30m", "bloom-tiny", "bert-tiny", "bert-30m", "roberta-tiny",
    "t5-tiny", "t5-30m", "bart-tiny", "bart-30m",
)  # fmt: skip
DEFAULT_PRECISIONS = ("fp32", "bf16")
DEFAULT_SHAPES = {name: (8, 256) for name in DEFAULT_MODELS}
"""(batch_size, seq_len) per preset when neither is given."""


@dataclass
class BenchResult:
    model: str
    precision: str
    batch_size: int
    seq_len: int
    ours_tokens_per_s: float
    fraction_of_matmul_peak: float
    matmul_peak_flops: float
    hf_tokens_per_s: float | None = None
    hf_fraction_of_matmul_peak: float | None = None
    ratio: float | None = None
    """ours_tokens_per_s / hf_tokens_per_s."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _random_batch(cfg: ModelConfig, batch_size: int, seq_len: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, cfg.vocab_size, (batch_size, seq_len), generator=generator)


MASK_RATE = 0.15
"""Fraction of positions an MLM benchmark batch masks and predicts (BERT's rate)."""


TARGET_FRACTION = 4
"""Encoder-decoder benchmark batches have targets of seq_len / 4 tokens (span corruption's
targets are ~0.2 of the inputs)."""


def _batch(cfg: ModelConfig, batch_size: int, seq_len: int) -> tuple[dict, torch.Tensor, dict]:
    """(our model kwargs with labels, HF model kwargs with labels) of one benchmark batch.

    Decoders: random tokens, next-token targets (ours aligned, HF shifts inside). Encoders: 15% of
    positions replaced by a mask id and predicted, the same labels for both (MLM does not shift).
    Encoder-decoders: random inputs and seq_len / 4 random targets; HF shifts them right into its
    decoder inputs, ours get them shifted explicitly (from the start token of `bench_config`).
    """
    input_ids = _random_batch(cfg, batch_size, seq_len)
    if cfg.family == "decoder":
        return {"input_ids": input_ids, "labels": _aligned_labels(input_ids)}, {
            "input_ids": input_ids, "labels": input_ids}  # fmt: skip
    if cfg.family == "encoder":
        generator = torch.Generator().manual_seed(1)
        selected = torch.rand(input_ids.shape, generator=generator) < MASK_RATE
        labels = torch.where(selected, input_ids, IGNORE_INDEX)
        masked = input_ids.masked_fill(selected, 4)
        return {"input_ids": masked, "labels": labels}, {"input_ids": masked, "labels": labels}
    labels = _random_batch(cfg, batch_size, seq_len // TARGET_FRACTION)
    start = torch.full_like(labels[:, :1], cfg.tokens.decoder_start_id)
    decoder_input_ids = torch.cat([start, labels[:, :-1]], dim=1)
    ours = {"input_ids": input_ids, "decoder_input_ids": decoder_input_ids, "labels": labels}
    return ours, {"input_ids": input_ids, "labels": labels}


def _step_flops(cfg: ModelConfig, batch_size: int, seq_len: int, target_fraction: float) -> float:
    """Useful training FLOPs of one benchmark step (Kaplan et al. / PaLM counting, see flops.py)."""
    if cfg.family != "encoder_decoder":
        per_token = training_flops_per_token(cfg, seq_len, target_fraction=target_fraction)
        return per_token * batch_size * seq_len
    D, F, A, T = cfg.d_model, cfg.d_ff, cfg.d_attention, seq_len
    Td = seq_len // TARGET_FRACTION
    mlp = (3 if cfg.mlp.gated else 2) * D * F
    num_decoder = cfg.num_decoder_layers or cfg.num_layers
    encoder = cfg.num_layers * (6 * (4 * D * A + mlp) * T + 12 * A * T * T)
    # Decoder: self-attention, cross-attention queries/output, MLP per target token; cross keys and
    # values per source token; the vocabulary projection per target token.
    decoder = num_decoder * (
        6 * (6 * D * A + mlp) * Td + 6 * 2 * D * A * T + 12 * A * Td * Td + 12 * A * Td * T
    )
    return batch_size * (encoder + decoder + 6 * cfg.vocab_size * D * Td)


def _aligned_labels(input_ids: torch.Tensor) -> torch.Tensor:
    """Our labels are aligned with positions: the target of t is token t + 1 (HF shifts inside)."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, :-1] = input_ids[:, 1:]
    return labels


def median_step_seconds(
    steps_by_name: dict[str, Callable[[], None]], *, warmup: int, steps: int
) -> dict[str, float]:
    """Median wall time per named step function, after `warmup` untimed calls of each.

    The functions take turns (ours, HF, ours, HF, ...) so that load from other processes on a shared
    machine lands on both sides alike instead of on whichever happened to run during it.
    """
    for _ in range(warmup):
        for step in steps_by_name.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for _ in range(steps):
        for name, step in steps_by_name.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def our_train_step(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    precision: str,
    inputs: dict[str, torch.Tensor] | None = None,
):
    """A closure running one training step of our model (loss = loss_sum / num_targets); `inputs`
    (model kwargs with labels) default to `input_ids` with next-token targets."""
    optimizer = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95))
    if inputs is None:
        inputs = {"input_ids": input_ids, "labels": _aligned_labels(input_ids)}

    autocast = Precision(precision, "cpu").autocast

    def step() -> None:
        with autocast():
            output = model(**inputs)
            loss = output.loss_sum / output.num_targets
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def hf_train_step(hf_model: torch.nn.Module, inputs: dict[str, torch.Tensor], precision: str):
    """A closure running one training step of the HF model, the way an HF script would."""
    optimizer = torch.optim.AdamW(hf_model.parameters(), lr=3e-4)

    autocast = Precision(precision, "cpu").autocast

    def step() -> None:
        with autocast():
            loss = hf_model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench_config(name: str) -> ModelConfig:
    """The preset `name` with the special token ids a run would store: a bare preset has none, and
    transformers' encoder-decoders shift their labels right from the configured decoder start."""
    cfg = get_preset(name)
    if cfg.family != "encoder_decoder":
        return cfg
    return replace(cfg, tokens=TokenIdsConfig(pad_id=0, eos_id=1, decoder_start_id=0))


def build_step(side: str, name: str, precision: str, batch_size: int, seq_len: int):
    """One side's training-step closure on the benchmark batch; both sides start from the weights
    of our model built with seed 0 (HF's through `interop.hf`)."""
    cfg = bench_config(name)
    inputs, hf_inputs = _batch(cfg, batch_size, seq_len)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    if side == "ours":
        return our_train_step(model, inputs["input_ids"], precision, inputs)
    from lmforge.interop.hf import build_hf_model

    hf_model = build_hf_model(cfg, model.state_dict()).train()
    del model
    return hf_train_step(hf_model, hf_inputs, precision)


def _worker_main(conn: Connection, side: str, num_threads: int) -> None:
    """Serve ("setup", name, precision, batch_size, seq_len) and ("step",) until ("stop",)."""
    torch.set_num_threads(num_threads)
    keep_freed_memory()  # both sides run with the allocator policy of lmforge's own commands
    step = None
    while True:
        command, *args = conn.recv()
        if command == "stop":
            return
        try:
            if command == "setup":
                step = None  # free the previous model before building the next
                step = build_step(side, *args)
            else:
                step()
            conn.send(("ok", None))
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("error", traceback.format_exc()))


class StepWorker:
    """One side of the benchmark (ours or HF's) in a process of its own.

    Each side keeps its own heap: with both models in one process, what one side had allocated
    and freed before changed the other's step time by up to 30%. Both sides keep freed memory for
    reuse (`kernels.allocator`, as lmforge's commands run), which also steadies the step times:
    without it, page faults made HF's steps vary by 15% and ours by 10% (and made both 10-15%
    slower). The parent times each `step()` (a pipe round trip, ~0.1 ms, on both sides alike)
    and runs one side at a time.
    """

    def __init__(self, side: str) -> None:
        context = multiprocessing.get_context("spawn")  # fork would inherit a running OpenMP pool
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_worker_main, args=(child, side, torch.get_num_threads()), daemon=True
        )
        self._process.start()

    def _call(self, *message: object) -> None:
        self._conn.send(message)
        status, detail = self._conn.recv()
        if status == "error":
            raise RuntimeError(f"benchmark worker failed:\n{detail}")

    def setup(self, name: str, precision: str, batch_size: int, seq_len: int) -> None:
        self._call("setup", name, precision, batch_size, seq_len)

    def step(self) -> None:
        self._call("step")

    def close(self) -> None:
        if self._process.is_alive():
            self._conn.send(("stop",))
            self._process.join(timeout=30)


def bench_shape(
    name: str,
    precision: str,
    *,
    batch_size: int,
    seq_len: int,
    steps: int,
    warmup: int,
    workers: dict[str, StepWorker],
    peak_flops: float,
) -> BenchResult:
    """Benchmark one preset in one precision (fp32 weights on both sides) on `workers` ("ours" and
    optionally "hf")."""
    cfg = get_preset(name)
    if cfg.max_seq_len is not None and seq_len > cfg.max_seq_len:
        raise LmforgeError(f"--seq-len {seq_len} exceeds {name}'s {cfg.max_seq_len} positions")
    # Useful work: an MLM step needs the vocabulary projection at the masked positions only.
    target_fraction = MASK_RATE if cfg.family == "encoder" else 1.0
    step_flops = _step_flops(cfg, batch_size, seq_len, target_fraction)
    tokens = batch_size * seq_len  # input (encoder) tokens
    for worker in workers.values():
        worker.setup(name, precision, batch_size, seq_len)
    steps_by_name = {side: worker.step for side, worker in workers.items()}
    seconds = median_step_seconds(steps_by_name, warmup=warmup, steps=steps)
    flops_per_s = {side: step_flops / value for side, value in seconds.items()}
    result = BenchResult(
        model=name,
        precision=precision,
        batch_size=batch_size,
        seq_len=seq_len,
        ours_tokens_per_s=tokens / seconds["ours"],
        fraction_of_matmul_peak=flops_per_s["ours"] / peak_flops,
        matmul_peak_flops=peak_flops,
    )
    if "hf" in seconds:
        result.hf_tokens_per_s = tokens / seconds["hf"]
        result.hf_fraction_of_matmul_peak = flops_per_s["hf"] / peak_flops
        result.ratio = seconds["hf"] / seconds["ours"]
    return result


def run_benchmarks(
    models: list[str],
    precisions: list[str],
    *,
    steps: int,
    warmup: int,
    batch_size: int | None,
    seq_len: int | None,
    against_hf: bool,
) -> Iterator[BenchResult]:
    """Yield one result per (model, precision), each with the matmul peak measured just before."""
    for precision in precisions:
        if precision not in ("fp32", "bf16"):
            raise LmforgeError(f"unknown precision {precision!r}; use fp32 or bf16")
    for name in models:
        get_preset(name)  # fail on a bad name before the long measurements start
    workers = {side: StepWorker(side) for side in (("ours", "hf") if against_hf else ("ours",))}
    try:
        for name in models:
            default_batch, default_seq = DEFAULT_SHAPES.get(name, (8, 256))
            for precision in precisions:
                yield bench_shape(
                    name,
                    precision,
                    batch_size=batch_size or default_batch,
                    seq_len=seq_len or default_seq,
                    steps=steps,
                    warmup=warmup,
                    workers=workers,
                    # Measured next to each shape: on a shared machine the load drifts in minutes.
                    peak_flops=measure_matmul_peak("cpu", DTYPES[precision], size=2048),
                )
    finally:
        for worker in workers.values():
            worker.close()
