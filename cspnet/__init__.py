"""cspnet: Cross Stage Partial Networks in PyTorch, each CSP model beside its plain twin."""

from cspnet.errors import ConfigError, CspnetError, InputError
from cspnet.interop.darknet.native import from_darknet
from cspnet.interop.darknet.transfer import to_darknet
from cspnet.interop.timm import from_timm
from cspnet.models import (
    CspNet,
    ModelCfg,
    StemCfg,
    build_cfg,
    create_model,
    list_models,
    model_info,
    register_model,
)
from cspnet.nn import ConvBNAct, CrossStage, StageCfg, register_block

__version__ = "0.1.0"

_LAZY = {
    "torchvision_backbone": "cspnet.interop.torchvision",
    "torchvision_segmentation": "cspnet.interop.torchvision",
    "Model": "cspnet.engine.api",
    "Predictor": "cspnet.engine.predict",
}


def __getattr__(name: str):
    # torchvision's detection and segmentation modules take seconds to import, and the training engine (behind
    # Model and Predictor) is not needed to build a model: load them on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cspnet' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "ConvBNAct",
    "CrossStage",
    "CspNet",
    "CspnetError",
    "InputError",
    "Model",
    "ModelCfg",
    "Predictor",
    "StageCfg",
    "StemCfg",
    "build_cfg",
    "create_model",
    "from_darknet",
    "from_timm",
    "list_models",
    "model_info",
    "register_block",
    "register_model",
    "to_darknet",
    "torchvision_backbone",
    "torchvision_segmentation",
]
