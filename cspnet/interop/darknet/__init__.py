"""Darknet interop: `.cfg` -> PyTorch, `.weights` read/write, and mapping onto the native zoo."""

from cspnet.interop.darknet.cfg import Section, parse_cfg, parse_cfg_text
from cspnet.interop.darknet.model import DarknetModel
from cspnet.interop.darknet.native import from_darknet
from cspnet.interop.darknet.weights import DarknetHeader, random_weights, read_weights, write_weights

__all__ = [
    "DarknetHeader",
    "DarknetModel",
    "Section",
    "from_darknet",
    "parse_cfg",
    "parse_cfg_text",
    "random_weights",
    "read_weights",
    "write_weights",
]
