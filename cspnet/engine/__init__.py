"""The training engine: one Trainer loop and `evaluate`, the Task and Metric protocols, and a registry of tasks."""

from cspnet.engine.checkpoint import load_checkpoint, load_model, save_checkpoint
from cspnet.engine.config import TrainCfg
from cspnet.engine.evaluation import evaluate
from cspnet.engine.metrics import GatherMetric, Metric, SumMetric
from cspnet.engine.task import Task, TaskBase
from cspnet.engine.trainer import NonFiniteLossError, Trainer

__all__ = [
    "GatherMetric",
    "Metric",
    "NonFiniteLossError",
    "SumMetric",
    "Task",
    "TaskBase",
    "TrainCfg",
    "Trainer",
    "evaluate",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]
