"""The fused inference path, for deployment: the modules live in cspnet.nn.fuse (models offer `.fuse()` from there)."""

from cspnet.nn.fuse import FusedConvAct, FusedCrossStage, FusedResidual, FuseOptions, fuse_model

__all__ = ["FuseOptions", "FusedConvAct", "FusedCrossStage", "FusedResidual", "fuse_model"]
