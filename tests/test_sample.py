"""`cspnet sample`: a generated dataset every command can use, in YOLO, COCO and VOC layouts, the same boxes in each."""

import json
from pathlib import Path

import pytest

from cspnet.cli import main
from cspnet.data import open_split
from cspnet.data.detection import open_detection
from cspnet.data.sample import CLASSES


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("s") / "sample"
    assert main(["sample", str(out)]) == 0
    return out


def test_sample_is_small_and_refuses_to_overwrite(sample, capsys):
    size = sum(p.stat().st_size for p in sample.rglob("*") if p.is_file())
    assert size < 2 * 2**20
    assert main(["sample", str(sample)]) == 2
    assert "already holds files" in capsys.readouterr().err


def test_classify_folder(sample):
    ds = open_split(sample / "classify", "train")
    assert ds.classes == sorted(CLASSES) and len(ds) == 40 * len(CLASSES)
    assert len(open_split(sample / "classify", "val")) == 12 * len(CLASSES)


def test_three_detection_layouts_hold_the_same_boxes(sample):
    def boxes(src):
        return sorted(
            (Path(r.path).stem, tuple(int(round(v)) for v in b), src.names[c])
            for r in src.records
            for b, c in zip(r.boxes.tolist(), r.classes.tolist())
        )

    for split in ("train", "val"):
        yolo = open_detection(sample / "detect" / "data.yaml", split)
        coco = open_detection(sample / "detect_coco" / "annotations" / f"instances_{split}.json", split)
        voc = open_detection(sample / "detect_voc", split)
        assert len(yolo.records) == {"train": 48, "val": 16}[split]
        assert boxes(yolo) == boxes(coco) == boxes(voc)
        n = json.loads((sample / "detect_coco" / "annotations" / f"instances_{split}.json").read_text())
        assert len(boxes(yolo)) == len(n["annotations"]) > len(yolo.records)
