"""Darknet interop: `.cfg` -> PyTorch, `.weights` read/write, mapping onto the native zoo and back."""

from cspnet.interop.darknet.cfg import Section, parse_cfg, parse_cfg_text
from cspnet.interop.darknet.emit import cfg_text
from cspnet.interop.darknet.model import DarknetModel
from cspnet.interop.darknet.native import from_darknet
from cspnet.interop.darknet.transfer import is_darknet_weights, load_darknet_weights, to_darknet
from cspnet.interop.darknet.weights import DarknetHeader, random_weights, read_weights, write_weights

__all__ = [
    "DarknetHeader",
    "DarknetModel",
    "Section",
    "cfg_text",
    "from_darknet",
    "is_darknet_weights",
    "load_darknet_weights",
    "parse_cfg",
    "parse_cfg_text",
    "random_weights",
    "read_weights",
    "to_darknet",
    "write_weights",
]
