"""lmforge: pretrain transformer language models of all three families and put them to work.

The Python API (`lmforge.api`, docs/api.md) is importable from here: `lmforge.load`,
`lmforge.load_finetuned`, `lmforge.finetune`, `lmforge.pretrain`. It is imported on first use, so
`import lmforge` stays cheap (no torch) for code that only reads configs.
"""

__version__ = "0.1.0"

_API = ("Finetuned", "Pretrained", "PretrainingResult", "finetune", "load", "load_finetuned",
        "pretrain")  # fmt: skip


def __getattr__(name: str) -> object:
    if name in _API:
        from lmforge import api

        return getattr(api, name)
    raise AttributeError(f"module 'lmforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
