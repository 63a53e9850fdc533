"""Fine-tune a CSP classifier on your images: DATA/train/<class>/*.jpg and DATA/val/<class>/*.jpg (or a zip of them).

python examples/finetune_classifier.py --data ../shared/data/cifar10.zip --model cspresnet10 --img 32 --subset 2000
python examples/finetune_classifier.py --data DATA --model cspresnet50 --weights cspresnet50.safetensors
"""

import argparse
from pathlib import Path

import torch

from cspnet.data import eval_transform, open_split
from cspnet.engine import TrainCfg, Trainer
from cspnet.engine.checkpoint import load_model
from cspnet.engine.tasks.classify import ClassifyCfg, ClassifyTask

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--data", required=True, help="image folder or zip with train/ and val/ splits")
p.add_argument("--model", default="cspresnet50", help="any name from `cspnet models`")
p.add_argument("--weights", default=None, help="start from these weights (.safetensors or a checkpoint)")
p.add_argument("--img", type=int, default=224)
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--lr", type=float, default=0.01)
p.add_argument("--subset", type=int, default=None, help="train on this many random images (quick runs)")
p.add_argument("--workers", type=int, default=2, help="data loader processes")
p.add_argument("--out", default="runs/finetune", help="run folder (weights/best.pt, results.csv, plots)")
args = p.parse_args()

# small images (CIFAR-sized) keep their resolution: no stride in the stem
task = ClassifyTask(
    ClassifyCfg(args.model, args.data, args.img, args.img <= 64, args.subset, args.subset, weights=args.weights)
)
cfg = TrainCfg(
    epochs=args.epochs, batch=args.batch, lr=args.lr, warmup_epochs=min(1, args.epochs - 1), save_dir=args.out
)
metrics = Trainer(task, cfg).fit()
print({k: round(v, 3) for k, v in metrics.items() if isinstance(v, float)})

# the best checkpoint, rebuilt from its own metadata: predict the first validation images
model, meta, _ = load_model(Path(args.out) / "weights" / "best.pt", "classify")
val = open_split(args.data, "val", eval_transform(meta["img"]))
images = torch.stack([val[i][0] for i in range(min(4, len(val)))])
with torch.inference_mode():
    probs = model(images).softmax(1)
for i, (conf, idx) in enumerate(zip(*probs.max(1))):
    print(f"val image {i}: {meta['classes'][idx]} ({conf:.2f}), true {val.classes[val[i][1]]}")
