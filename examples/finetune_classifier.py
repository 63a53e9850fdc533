"""Fine-tune a CSP classifier on your images: DATA/train/<class>/*.jpg and DATA/val/<class>/*.jpg (or a zip of them).

python examples/finetune_classifier.py --data ../shared/data/cifar10.zip --model cspresnet10 --img 32 --subset 2000
python examples/finetune_classifier.py --data DATA --model cspresnet50 --weights cspresnet50.safetensors
"""

import argparse
from pathlib import Path

from cspnet import Model
from cspnet.data import open_split

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

# the same as `cspnet classify train ...`; small images (CIFAR-sized) keep their resolution: no stride in the stem
model = Model(args.model)
out = Path(args.out)
metrics = model.train(
    data=args.data,
    img=args.img,
    small_input=args.img <= 64,
    subset=args.subset,
    val_subset=args.subset,
    weights=args.weights,
    epochs=args.epochs,
    batch=args.batch,
    lr=args.lr,
    warmup_epochs=min(1, args.epochs - 1),
    workers=args.workers,
    project=out.parent,
    name=out.name,
    exist_ok=True,
)
print({k: round(v, 3) for k, v in metrics.items() if isinstance(v, float)})

# `model` now holds the run's best.pt: predict the first validation images
val = open_split(args.data, "val")  # (PIL image, class index) pairs
first = [val[i] for i in range(min(4, len(val)))]
for i, (r, (_, true)) in enumerate(zip(model.predict([im for im, _ in first], topk=1), first)):
    print(f"val image {i}: {r.labels[0]} ({float(r.scores[0]):.2f}), true {val.classes[true]}")
