"""Preprocessing: what is done to stored arrays before they reach the model, said once and recorded.

    >>> spec = Preprocess.parse("scale=0.003921,mean=0.5/0.5/0.5,std=0.25/0.25/0.25")
    >>> spec.describe()
    'x * 0.003921, - mean (0.5, 0.5, 0.5), / std (0.25, 0.25, 0.25)'
    >>> Preprocess.parse("imagenet").mean
    (0.485, 0.456, 0.406)

A spec is a preset or comma-separated ``key=value`` items (several values in one item separated
by ``/``; a preset may stand first, as in ``imagenet,layout=nchw``), applied in this order to float32:
``scale`` (multiply), ``offset`` (add), ``mean`` (subtract per channel), ``std`` (divide per channel),
``layout=nchw`` (the stored arrays are channels-last and the model takes channels-first: transpose). Presets:

    none       arrays reach the model as stored (integer ids stay integers)
    unit       x / 255
    imagenet   x / 255, then mean 0.485/0.456/0.406 and std 0.229/0.224/0.225
    symmetric  x / 127.5 - 1

Artifacts keep the model's own input contract; the spec is the record of what turns stored arrays
into it. It is recorded once per artifact, under one key (``preprocess`` in the file's edgeship
metadata, the canonical text of ``Preprocess.spec``); manifest.json and the validation bundle carry
the same text. It is applied the same way wherever data meets a model: on the host (calibration,
validate, doctor, bench inputs) and on a device (``session.predict(raw, preprocess=True)`` reads
it from the file). This module needs numpy alone, so the thin runtime has it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeship.errors import BadInputError

__all__ = ["Preprocess", "PRESETS"]

PRESETS = {
    "none": "",
    "unit": "scale=0.00392156862745098",
    "imagenet": "scale=0.00392156862745098,mean=0.485/0.456/0.406,std=0.229/0.224/0.225",
    "symmetric": "scale=0.00784313725490196,offset=-1",
}
_KEYS = ("scale", "offset", "mean", "std", "layout")
#: an ASCII decimal number: no full-width digits, no '_' separators, no 'inf' or 'nan'
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: magnitudes each key may take (low 0: zero allowed). A scale or std outside them sends float32 inputs
#: to 0 or past 1e30, where no model trained on real data answers above chance.
_BOUNDS = {"scale": (1e-10, 1e10), "std": (1e-10, 1e10), "offset": (0.0, 1e10), "mean": (0.0, 1e10)}


@dataclass(frozen=True)
class Preprocess:
    """A parsed preprocessing spec; the identity when every field is at its default."""

    scale: float = 1.0
    offset: float = 0.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    layout: str = "nhwc"
    name: str = ""  # the preset it came from, if any

    @classmethod
    def parse(cls, spec: str | Preprocess | None) -> Preprocess:
        """A Preprocess from a preset name or ``key=value`` items; anything else is refused, naming
        the item: keys and presets are lower-case as written here, numbers are ASCII decimals,
        finite, and a spec names at least one item (None means ``none``)."""
        if isinstance(spec, Preprocess):
            return spec
        if spec is None:
            return cls()
        if not isinstance(spec, str):
            raise BadInputError(
                f"a preprocessing spec is text, e.g. unit or scale=0.003921; received {type(spec).__name__}"
            )
        text = spec.strip()
        if text in PRESETS:
            parsed = cls._items(PRESETS[text], text)
            return cls(**{**parsed.__dict__, "name": text})
        return cls._items(text, spec)

    @classmethod
    def _items(cls, text: str, original: str) -> Preprocess:
        values: dict[str, Any] = {}
        parts = [p.strip() for p in text.split(",")]
        if text and (not any(parts) or any(not p for p in parts)):
            raise BadInputError(
                f"preprocessing spec {original!r} has an empty item (between commas); write items "
                "as key=value separated by single commas, e.g. scale=0.003921,offset=-1"
            )
        if not text and original.strip() != "none" and original not in PRESETS:
            raise BadInputError(
                f"preprocessing spec {original!r} names no item; give a preset ({', '.join(PRESETS)}) "
                "or key=value items, e.g. scale=0.003921"
            )
        items: list[str] = []
        for i, part in enumerate(parts if text else []):  # a preset may open the spec
            items += (
                PRESETS[part].split(",")
                if i == 0 and "=" not in part and part in PRESETS and PRESETS[part]
                else ([] if i == 0 and part == "none" else [part])
            )
        for item in items:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in _KEYS:
                raise BadInputError(
                    f"preprocessing item {item!r} is not one of {', '.join(k + '=…' for k in _KEYS)} (lower-case) and "
                    f"{original!r} is not a preset ({', '.join(PRESETS)}); e.g. scale=0.003921,mean=0.5/0.5/0.5"
                )
            if key in values:
                raise BadInputError(f"preprocessing names {key} twice; received {original!r}")
            values[key] = cls._value(key, value.strip(), original)
        return cls(**values)

    @staticmethod
    def _value(key: str, value: str, original: str) -> Any:
        if key == "layout":
            if value not in ("nhwc", "nchw"):
                raise BadInputError(f"layout takes nhwc or nchw (lower-case); received {value!r} in {original!r}")
            return value
        texts = value.split("/")
        if not all(_NUMBER.fullmatch(t.strip()) for t in texts):
            raise BadInputError(
                f"{key} takes decimal numbers written in ASCII (several separated by /); received "
                f"{value!r} in {original!r}"
            )
        numbers = tuple(float(t) for t in texts)
        if not all(np.isfinite(numbers)):
            raise BadInputError(f"{key} must be finite; received {value!r} in {original!r}")
        low, high = _BOUNDS[key]
        bad = [n for n in numbers if abs(n) > high or (low and abs(n) < low)]
        if bad:
            span = f"from {low:g} to {high:g} in magnitude" if low else f"at most {high:g} in magnitude"
            raise BadInputError(
                f"{key}={bad[0]:g} is outside what a model's inputs can be scaled by (float32 "
                f"keeps its precision): {key} is {span}; received {value!r} in {original!r}"
            )
        if key in ("scale", "offset"):
            if len(numbers) != 1:
                raise BadInputError(f"{key} takes one number; received {value!r} in {original!r}")
            return numbers[0]
        return numbers

    @property
    def identity(self) -> bool:
        return (self.scale, self.offset, self.mean, self.std, self.layout) == (1.0, 0.0, (), (), "nhwc")

    @property
    def spec(self) -> str:
        """The canonical text of this spec (a preset's name when it is one)."""
        if self.name:
            return self.name
        # repr: the shortest text that parses back to the same float, so a reload is bit-identical
        items = [
            f"scale={self.scale!r}" if self.scale != 1.0 else "",
            f"offset={self.offset!r}" if self.offset else "",
            "mean=" + "/".join(repr(v) for v in self.mean) if self.mean else "",
            "std=" + "/".join(repr(v) for v in self.std) if self.std else "",
            "layout=nchw" if self.layout == "nchw" else "",
        ]
        return ",".join(i for i in items if i) or "none"

    def describe(self) -> str:
        """What the spec does, in words, for reports."""
        steps = [
            f"x * {self.scale:g}" if self.scale != 1.0 else "",
            f"+ {self.offset:g}" if self.offset else "",
            f"- mean {self.mean}" if self.mean else "",
            f"/ std {self.std}" if self.std else "",
            "channels-last -> channels-first" if self.layout == "nchw" else "",
        ]
        return ", ".join(s for s in steps if s) or "none: arrays reach the model as stored"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``x`` (one input's samples, channels last) as the model takes it."""
        if self.identity:
            return x if x.dtype.kind in "iub" else np.asarray(x, np.float32)
        out = np.asarray(x, np.float32)
        if self.scale != 1.0:
            out = out * np.float32(self.scale)
        if self.offset:
            out = out + np.float32(self.offset)
        for values, op in ((self.mean, np.subtract), (self.std, np.divide)):
            if values:
                out = op(out, self._per_channel(values, out), dtype=np.float32)
        if self.layout == "nchw":
            if out.ndim < 3:
                raise BadInputError(f"layout=nchw needs samples with channels (N, H, W, C); received shape {out.shape}")
            out = np.ascontiguousarray(np.moveaxis(out, -1, 1))
        return out

    @staticmethod
    def _per_channel(values: tuple[float, ...], x: np.ndarray) -> np.ndarray:
        if len(values) not in (1, x.shape[-1]):
            raise BadInputError(
                f"the spec has {len(values)} per-channel values but the samples have "
                f"{x.shape[-1]} channels (last axis of shape {x.shape})"
            )
        return np.asarray(values, np.float32)
