"""Swap a CSP backbone into torchvision's Faster R-CNN, train it on a VOC folder (images/, annotations/) and predict.

python examples/fasterrcnn_backbone.py --data ../shared/data/raccoon --model cspresnet50 --steps 300"""

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
from torchvision.models.detection import FasterRCNN
from torchvision.transforms.v2.functional import pil_to_tensor

import cspnet
from cspnet.data.images import load_image

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--data", required=True, help="folder with images/ and annotations/ (VOC XML)")
p.add_argument("--model", default="cspresnet50", help="backbone: any name from `cspnet models`")
p.add_argument("--pretrained", default=None, help="backbone weights: 'timm' or a file")
p.add_argument("--img", type=int, default=512, help="shorter image side (torchvision's min_size)")
p.add_argument("--steps", type=int, default=300)
p.add_argument("--batch", type=int, default=2)
p.add_argument("--limit", type=int, default=None, help="use the first N annotated images (quick runs)")
args = p.parse_args()


def load(xml: Path) -> tuple[torch.Tensor, dict]:
    root = ET.parse(xml).getroot()
    objs = root.findall("object")
    boxes = [[float(o.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax")] for o in objs]
    image = pil_to_tensor(load_image(xml.parent.parent / "images" / root.find("filename").text)).float() / 255
    return image, dict(boxes=torch.tensor(boxes).reshape(-1, 4), names=[o.find("name").text for o in objs])


samples = [load(x) for x in sorted(Path(args.data, "annotations").glob("*.xml"))[: args.limit]]
classes = sorted({n for _, t in samples for n in t["names"]})
for _, t in samples:  # label 0 is torchvision's background
    t["labels"] = torch.tensor([classes.index(n) + 1 for n in t.pop("names")], dtype=torch.int64)

backbone = cspnet.torchvision_backbone(args.model, pretrained=args.pretrained, frozen_bn=bool(args.pretrained))
model = FasterRCNN(backbone, num_classes=len(classes) + 1, min_size=args.img, max_size=int(args.img * 1.67))
print(f"Faster R-CNN on {args.model}: {sum(q.numel() for q in model.parameters()) / 1e6:.1f}M params, {classes}")
opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=0.01, momentum=0.9, weight_decay=1e-4)
for step in range(args.steps):
    batch = [samples[i] for i in torch.randint(len(samples), (args.batch,)).tolist()]
    losses = model([im for im, _ in batch], [t for _, t in batch])
    loss = sum(losses.values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 50 == 0 or step == args.steps - 1:
        print(f"step {step}: loss {loss.item():.3f} " + " ".join(f"{k}={v.item():.3f}" for k, v in losses.items()))

model.eval()
with torch.inference_mode():
    det = model([samples[0][0]])[0]
for box, score, label in zip(det["boxes"][:5], det["scores"], det["labels"]):
    print(f"{classes[label - 1]} {score:.2f} at {[round(v) for v in box.tolist()]}")
print(f"{len(det['boxes'])} detections in all; ground truth {samples[0][1]['boxes'].tolist()}")
