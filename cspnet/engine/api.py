"""The Python API: a model with the commands as methods, each running the code of its command.

    from cspnet import Model

    model = Model("yolov4-tiny")                         # a zoo name (fresh weights) or a checkpoint file
    model.train(data="data.yaml", epochs=30, img=320)     # cspnet detect train --model yolov4-tiny --data ...
    model.val(data="data.yaml")                           # cspnet detect val --weights <best.pt> --data ...
    results = model.predict("photos/", conf=0.3)          # cspnet detect predict --weights <best.pt> photos/
    model.export(format="onnx")                           # cspnet export --weights <best.pt>

Keyword options are the command's options with `_` for `-` (`warmup_epochs=1` is `--warmup-epochs 1`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from cspnet.engine.checkpoint import load_model
from cspnet.engine.predict import Predictor, Result, ResultSaver
from cspnet.engine.task_registry import get_task
from cspnet.errors import ConfigError


class Model:
    """A classifier or detector: `Model("cspresnet50")`, `Model("yolov4-tiny", width=0.25)` (zoo names, with
    architecture overrides) or `Model("runs/detect/exp/weights/best.pt")` (a training checkpoint).

    Attributes: `task` ("classify" / "detect"), `module` (the torch model), `meta` (model name, class names,
    training size), `weights` (the checkpoint it was loaded from or last trained to, else None).
    """

    def __init__(self, model: str | Path = "yolov4-tiny", **overrides: Any):
        path = Path(model)
        if path.is_file() or path.suffix in (".pt", ".pth"):
            if overrides:
                raise ConfigError(f"{model} records its architecture; drop {', '.join(sorted(overrides))}")
            self._load(path)
            return
        from cspnet.models import create_model, model_info

        info = model_info(str(model))
        self.task, self.weights = info.task, None
        self.module = create_model(str(model), **overrides).eval()
        n = int(self.module.num_classes)
        arch = {k: v for k, v in overrides.items() if k != "num_classes"}
        self.meta = {"model": str(model), "num_classes": n, "classes": [str(i) for i in range(n)]}
        self.meta |= {"img": info.img_size, "overrides": arch}
        self._fused: nn.Module | None = None

    def _load(self, path: Path) -> None:
        self.module, self.meta, ckpt = load_model(path)
        self.task, self.weights, self._fused = ckpt["task"], path, None

    @property
    def name(self) -> str:
        return self.meta["model"]

    @property
    def names(self) -> list[str]:
        return self.meta["classes"]

    def __repr__(self) -> str:
        return f"Model({str(self.weights or self.name)!r}, task={self.task!r}, classes={len(self.names)})"

    def train(
        self,
        data: str | Path,
        *,
        project: str | None = None,
        name: str | None = None,
        exist_ok: bool = False,
        **options,
    ) -> dict[str, float]:
        """Train on `data` from these weights (`<task> train`); afterwards this Model holds the run's best.pt.

        options: the task's settings and the TrainCfg fields (epochs, batch, lr, img, ...). Returns the last
        epoch's metrics; the run folder is project/name (default runs/<task>/exp, exp2, ...).
        """
        self._trainable("train")
        from cspnet.engine.config import flat_values
        from cspnet.engine.launch import TRAIN_FIELDS, new_trainer

        options = {k: v for k, v in options.items() if v is not None}  # None: the default, as an option not given
        spec = get_task(self.task)
        fields = (set(flat_values(spec.cfg())) | TRAIN_FIELDS) - {"model", "data"}  # the flat option names
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ConfigError(
                f"unknown {self.task} train option {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
            )
        arch = self.meta.get("overrides", {})
        untrainable = sorted(set(arch) - fields)
        if untrainable:
            raise ConfigError(
                f"{self.task} train cannot rebuild the override {', '.join(untrainable)}; "
                f"it takes {', '.join(k for k in sorted(fields) if k in ('width', 'depth', 'backbone', 'small_input'))}"
            )
        given = {**arch, "model": self.name, "data": str(data), **options}
        if self.weights is not None:
            given.setdefault("weights", str(self.weights))  # fine-tune from the loaded checkpoint
        trainer = new_trainer(spec, given, project or f"runs/{self.task}", name, exist_ok)
        metrics = trainer.fit()
        best = Path(trainer.save_dir) / "weights" / "best.pt"
        if best.is_file():
            self._load(best)
        return metrics

    def val(self, data: str | Path, **options) -> dict[str, float]:
        """Score on a split of `data` (`<task> val`): e.g. top1/top5/loss, or map50/map/loss; plus "skipped".

        options: split, img, batch, workers, device, amp; detection also conf, iou, max_det.
        """
        metrics, _, _ = get_task(self.task).validate(self.module, self.meta, str(data), **options)
        return metrics

    def predict(
        self,
        source: Any,
        *,
        stream: bool = False,
        save: bool = False,
        project: str | None = None,
        name: str | None = None,
        exist_ok: bool = False,
        fuse: bool = True,
        **options,
    ) -> list[Result] | Iterator[Result]:
        """Results for images, folders, globs, videos or in-memory images (`<task> predict`; see Predictor).

        options: img, conf, iou, classes, max_det, topk, batch, device. stream: a generator (long videos).
        save: also write the drawn images, YOLO labels and predictions.json to project/name (default
        runs/<task>/predict, predict2, ...).
        """
        fuse = fuse and isinstance(self.module, nn.Module)  # an exported file is already what it runs
        if fuse and self._fused is None:  # fused once, reused by later calls; `module` stays trainable
            self._fused = copy.deepcopy(self.module).fuse() if hasattr(self.module, "fuse") else self.module
        pred = Predictor(self._fused if fuse else self.module, self.meta, fuse=False, **options)
        results = pred.stream(source)
        if save:
            results = self._saved(results, project, name, exist_ok)
        return results if stream else list(results)

    def _saved(self, results: Iterator[Result], project: str | None, name: str | None, exist_ok: bool):
        from cspnet.engine.run import claim_run

        saver = ResultSaver(claim_run(project or f"runs/{self.task}", name, exist_ok, "predict").path)
        try:
            for r in results:
                saver.add(r)
                yield r
        finally:
            saver.close()

    def export(
        self, format: str = "onnx", path: str | Path | None = None, *, img: int | None = None, **options
    ) -> dict:
        """Write an exported, checked copy (cspnet.deploy.export.export, as `cspnet export`); returns its report.

        path: default <model name>.<suffix> in the working folder. img: default the training size.
        """
        from cspnet.deploy.export import SUFFIX, export

        self._trainable("export")
        path = path or f"{self.name}{SUFFIX.get(format, '')}"
        meta = {"model": self.name, "classes": self.names, **options.pop("meta", {})}  # names travel in the file
        return export(copy.deepcopy(self.module), path, format, img_size=img or self.meta["img"], meta=meta, **options)

    def _trainable(self, what: str) -> None:
        """An exported file runs (val, predict) but has no PyTorch weights to train or export again."""
        if not isinstance(self.module, nn.Module):
            raise ConfigError(
                f"{self.weights} is an exported file: it can val and predict, not {what}; use the checkpoint it came from"
            )
