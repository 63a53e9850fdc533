"""Tasks plugged into the Trainer: what to train and how to measure it."""

from cspnet.engine.tasks.classify import ClassifyTask

__all__ = ["ClassifyTask"]
