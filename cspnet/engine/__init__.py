"""The training engine: one Trainer loop, with tasks (classify; detection later) plugged in."""

from cspnet.engine.checkpoint import load_checkpoint, save_checkpoint
from cspnet.engine.trainer import NonFiniteLossError, Task, TrainCfg, Trainer

__all__ = ["NonFiniteLossError", "Task", "TrainCfg", "Trainer", "load_checkpoint", "save_checkpoint"]
