"""Interop with other implementations: timm (`interop.timm`) and darknet (`interop.darknet`)."""

from cspnet.interop import weights as _weights  # noqa: F401  (registers darknet .weights and timm's hub with the loader)
