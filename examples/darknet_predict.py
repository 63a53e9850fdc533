"""Convert the authors' darknet .cfg + .weights to a native cspnet model and classify images with it.

    python examples/darknet_predict.py --cfg csresnext50.cfg --weights csresnext50.weights --images a.jpg b.jpg
Without --weights, random weights are written first (darknet's own file format), so the script runs anywhere.
"""

import argparse
from pathlib import Path

import torch

import cspnet
from cspnet.data import eval_transform
from cspnet.data.images import load_image
from cspnet.interop.darknet.model import DarknetModel
from cspnet.interop.darknet.weights import write_weights
from cspnet.models.weights import save_state_dict

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--cfg", required=True, help="darknet .cfg, e.g. ../shared/darknet/csresnext50.cfg")
p.add_argument("--weights", default=None, help="darknet .weights (default: random ones, written beside --out)")
p.add_argument("--images", nargs="+", required=True)
p.add_argument("--img", type=int, default=256, help="input size (the authors' ImageNet models use 256)")
p.add_argument("--out", default="converted.safetensors", help="where the converted weights go")
args = p.parse_args()

weights = args.weights
if weights is None:  # a stand-in for the real file: darknet's format, random values
    weights = Path(args.out).with_suffix(".weights")
    write_weights(DarknetModel.from_cfg(args.cfg), weights)
    print(f"no --weights: wrote random ones to {weights}")

# the native model (e.g. cspresnext50(layout="darknet")), checked against the cfg's own graph on a random batch
model = cspnet.from_darknet(args.cfg, weights)
print(
    f"{args.cfg} -> {getattr(model, 'name', type(model).__name__)}, {sum(q.numel() for q in model.parameters()) / 1e6:.2f}M params"
)
save_state_dict(model.state_dict(), args.out)
print(f"wrote {args.out} (safetensors, {len(model.state_dict())} tensors): no darknet code needed to load it again")

tf = eval_transform(args.img)
batch = torch.stack([tf(load_image(f)) for f in args.images])
with torch.inference_mode():
    out = model.eval()(batch)
probs = out if isinstance(model, DarknetModel) else out.softmax(1)  # a cfg model (not native) ends in softmax
for f, (p5, i5) in zip(args.images, zip(*probs.topk(5, 1))):
    print(f"{Path(f).name}: " + ", ".join(f"class {i} {q:.3f}" for q, i in zip(p5.tolist(), i5.tolist())))
