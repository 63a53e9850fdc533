"""cspnet: Cross Stage Partial Networks in PyTorch, each CSP model beside its plain twin."""

from cspnet.darknet.native import from_darknet
from cspnet.errors import ConfigError, CspnetError, InputError
from cspnet.layers import ConvBNAct
from cspnet.models import CspNet, ModelCfg, StemCfg, build_cfg, create_model, list_models, model_info
from cspnet.stages import CrossStage, StageCfg
from cspnet.timm_interop import from_timm

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
