"""Building blocks: layers, blocks, stems and the CSP stage."""

from cspnet.nn.blocks import BLOCKS, get_block, register_block
from cspnet.nn.layers import BNActConv, ConvBNAct, make_act
from cspnet.nn.stages import CrossStage, StageCfg

__all__ = ["BLOCKS", "BNActConv", "ConvBNAct", "CrossStage", "StageCfg", "get_block", "make_act", "register_block"]
