"""Models: the generic CspNet, its configs, the registry and the zoo."""

from cspnet.models import yolo, zoo, zoo_dense  # noqa: F401  (registers the zoo)
from cspnet.models.img_size import check_img_size, model_stride
from cspnet.models.net import CspNet, FeatureNet, ModelCfg, StemCfg
from cspnet.models.registry import (
    ModelInfo,
    build_cfg,
    create_model,
    iter_models,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "CspNet",
    "FeatureNet",
    "ModelCfg",
    "ModelInfo",
    "StemCfg",
    "build_cfg",
    "check_img_size",
    "create_model",
    "iter_models",
    "list_models",
    "model_info",
    "model_stride",
    "register_model",
]
