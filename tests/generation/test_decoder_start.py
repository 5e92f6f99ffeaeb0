"""Seq2seq decoding starts from the token the model configuration stores, never a guess."""

from __future__ import annotations

import dataclasses

import pytest

from lmforge.config.model import TokenIdsConfig
from lmforge.config.presets import get_preset
from lmforge.errors import LmforgeError
from lmforge.generation.search import decoder_start_id


def test_decoder_start_is_the_stored_id() -> None:
    config = dataclasses.replace(get_preset("t5-tiny"), tokens=TokenIdsConfig(decoder_start_id=3))
    assert decoder_start_id(config) == 3


def test_missing_decoder_start_is_one_clear_error() -> None:
    with pytest.raises(LmforgeError, match=r"names no decoder start token \(tokens.decoder_start"):
        decoder_start_id(get_preset("bart-tiny"))
