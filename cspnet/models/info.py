"""A registered model's metadata (its own module, so the weights loader can name it without importing the
registry, which imports the loader)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cspnet.models.net import ModelCfg


@dataclass(frozen=True)
class ModelInfo:
    """Metadata next to the architecture: its twin, the figures it should reproduce, where it comes from."""

    name: str
    build_cfg: Callable[[], ModelCfg]
    twin: str | None = None
    img_size: int = 224
    params_m: float | None = None  # millions, 1000 classes, as measured by `cspnet models`
    gmacs: float | None = None  # at img_size, batch 1
    timm_name: str | None = None  # same architecture in timm (parity tests, from_timm, pretrained="timm")
    paper: str = ""  # the paper row / reference it reproduces
    task: str = "classify"  # "classify" or "detect"
    model_cls: Callable | None = None  # builds the model from the cfg; None: CspNet
    num_classes: int = 1000  # default number of classes

    @property
    def is_csp(self) -> bool:
        cfg = self.build_cfg()
        return cfg.is_csp if hasattr(cfg, "is_csp") else any(s.is_csp for s in cfg.stages)
