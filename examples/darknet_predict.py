"""Convert the authors' darknet .cfg + .weights into a native cspnet model, then detect (or classify) and draw.

    python examples/darknet_predict.py --cfg yolov4.cfg --weights yolov4.weights --images a.jpg b.jpg
Without --weights, random weights are written first (darknet's own format), so the script runs anywhere.
"""

import argparse
from pathlib import Path

import torch
from torchvision.ops import clip_boxes_to_image
from torchvision.transforms.v2.functional import pil_to_tensor, resize, to_pil_image
from torchvision.utils import draw_bounding_boxes

import cspnet
from cspnet.data.boxes import postprocess
from cspnet.data.images import load_image
from cspnet.interop.darknet.model import DarknetModel
from cspnet.interop.darknet.weights import write_weights
from cspnet.models.weights import save_state_dict

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--cfg", required=True, help="darknet .cfg, e.g. ../shared/darknet/yolov4-tiny.cfg")
p.add_argument("--weights", default=None, help="darknet .weights (default: random ones, written beside --out)")
p.add_argument("--images", nargs="+", required=True)
p.add_argument("--img", type=int, default=416, help="network input size (darknet resizes, as here)")
p.add_argument("--conf", type=float, default=0.25)
p.add_argument("--out", default="converted.safetensors", help="converted weights; drawn images go beside it")
args = p.parse_args()

weights = args.weights
if weights is None:  # a stand-in for the real file: darknet's format, random values
    weights = Path(args.out).with_suffix(".weights")
    write_weights(DarknetModel.from_cfg(args.cfg), weights)
    print(f"no --weights: wrote random ones to {weights}")

# the native model (a YoloDetector, or a classifier such as cspresnext50), checked against the cfg's own graph
model = cspnet.from_darknet(args.cfg, weights).eval()
print(f"{args.cfg} -> {type(model).__name__}, {sum(q.numel() for q in model.parameters()) / 1e6:.2f}M params")
save_state_dict(model.state_dict(), args.out)
print(f"wrote {args.out}: safetensors, no darknet code needed to load it again")

for f in args.images:
    image = pil_to_tensor(load_image(f))  # 8-bit RGB whatever the file holds
    with torch.inference_mode():
        out = model(resize(image, [args.img, args.img])[None].float() / 255)
    if out.dim() == 2:  # a classifier: logits (a cfg model that is not native ends in softmax)
        probs = out if isinstance(model, DarknetModel) else out.softmax(1)
        print(f"{f}: top-5 classes {probs.topk(5).indices[0].tolist()}")
        continue
    det = postprocess(out, conf=args.conf)[0]  # x1, y1, x2, y2, score, class in network pixels, after NMS
    h, w = image.shape[-2:]
    det[:, :4] = clip_boxes_to_image(det[:, :4] * torch.tensor([w, h, w, h]) / args.img, (h, w))
    drawn = draw_bounding_boxes(image, det[:, :4], [f"{int(c)} {s:.2f}" for s, c in det[:, 4:].tolist()], colors="red")
    to_pil_image(drawn).save(Path(args.out).parent / f"pred_{Path(f).stem}.jpg")
    print(f"{f}: {len(det)} detections, e.g. {[[round(v) for v in d[:4]] for d in det[:3].tolist()]}")
