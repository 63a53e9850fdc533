"""The weight formats and sources that live in interop, plugged into the one loader (cspnet.models.weights).

models sits below interop and cannot import it, so interop registers what it reads when it is imported (the
package imports this module, and `import cspnet` imports the package):
- darknet `.weights` files, recognised by their header (see `sniff_format`): `load_darknet`;
- pretrained="timm" (and pretrained=True for the classifiers timm has): `interop.timm.timm_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from cspnet import hub
from cspnet.errors import ConfigError
from cspnet.interop.timm import timm_pretrained
from cspnet.models.weights import (
    register_pretrained_source,
    register_published_file,
    register_resolver,
    register_weights_format,
)


def load_darknet(model: nn.Module, path: Path) -> None:
    """Darknet `.weights` (whole, partial `.conv.N`, or for another class count) into a native cspnet model, the
    layout taken from the model. A detector that took darknet's whole head scores as darknet does (objectness x
    class probability, also with one class); a fresh or retrained head scores by objectness when it has one class."""
    from cspnet.interop.darknet import load_darknet_weights

    got = load_darknet_weights(model, path)
    head = getattr(model, "head", None)
    if hasattr(head, "one_class_logit") and got["convs"] == got["total_convs"]:  # nothing partial, nothing skipped
        head.one_class_logit = True


def published_weights(info) -> Path:
    """pretrained=True for a model whose authors published darknet weights (yolov4, yolov4-tiny, yolov4-csp): the
    cached download of the file the weights table names for it."""
    entry = hub.lookup(info.name)
    if entry is None or entry.model != info.name:
        raise ConfigError(
            f"pretrained=True: no pretrained weights registered for {info.name}; pass pretrained=PATH (a .safetensors, "
            ".pt or darknet .weights file)"
        )
    return hub.resolve(info.name)


register_weights_format("darknet", load_darknet)
register_pretrained_source("timm", timm_pretrained)
register_published_file(published_weights)
register_resolver(hub.resolve)
