"""cspnet: Cross Stage Partial Networks in PyTorch, each CSP model beside its plain twin."""

from cspnet.errors import ConfigError, CspnetError, InputError
from cspnet.interop.darknet.native import from_darknet
from cspnet.interop.timm import from_timm
from cspnet.models import CspNet, ModelCfg, StemCfg, build_cfg, create_model, list_models, model_info
from cspnet.nn import ConvBNAct, CrossStage, StageCfg

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConvBNAct",
    "CrossStage",
    "CspNet",
    "CspnetError",
    "InputError",
    "ModelCfg",
    "StageCfg",
    "StemCfg",
    "build_cfg",
    "create_model",
    "from_darknet",
    "from_timm",
    "list_models",
    "model_info",
]
