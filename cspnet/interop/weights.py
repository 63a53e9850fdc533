"""The weight formats and sources that live in interop, plugged into the one loader (cspnet.models.weights).

models sits below interop and cannot import it, so interop registers what it reads when it is imported (the
package imports this module, and `import cspnet` imports the package):
- darknet `.weights` files, recognised by their header (see `sniff_format`): `load_darknet`;
- pretrained="timm" (and pretrained=True for the classifiers timm has): `interop.timm.timm_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from cspnet.errors import InputError
from cspnet.interop.timm import timm_pretrained
from cspnet.models.weights import register_pretrained_source, register_weights_format


def load_darknet(model: nn.Module, path: Path) -> None:
    """Darknet `.weights` into a native cspnet model, the layout taken from the model (issue #19 plugs in the
    reader here: interop.darknet's `load_darknet_weights(model, path)`)."""
    raise InputError(
        f"darknet .weights need converting first (no direct loader yet): run `cspnet darknet convert CFG {path} "
        "OUT.safetensors` and pass OUT.safetensors"
    )


register_weights_format("darknet", load_darknet)
register_pretrained_source("timm", timm_pretrained)
