"""Build pipeline/sample/ from the shared mini set (run once; kept for provenance).

    python tools/make_sample.py [--src DIR] [--out DIR]

The defaults are found from this file, not from the working folder: --src is the shared
"dogs-vs-cats-mini" set beside the repository (../shared/data/dogs-vs-cats-mini, or under $PIPELINE_SHARED when
set), --out is the
repository's pipeline/sample.
"""
import argparse
import csv
import io
import os
import random
import zipfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = Path(os.environ.get("PIPELINE_SHARED") or REPO.parent / "shared") / "data" / "dogs-vs-cats-mini"
DEFAULT_OUT = REPO / "pipeline" / "sample"
MAX_SIDE = 128
SEED = 20261123


def shrink(data: bytes) -> bytes:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img.thumbnail((MAX_SIDE, MAX_SIDE), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def write_zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, date_time=(2013, 9, 25, 0, 0, 0)), data)


def main(src: Path, out: Path) -> None:
    """Draw the sample from ``src`` into ``out`` (train.zip, test.zip, solution.csv, test_provenance.csv)."""
    rng = random.Random(SEED)
    out.mkdir(parents=True, exist_ok=True)
    tz = zipfile.ZipFile(src / "train.zip")
    names = sorted(n for n in tz.namelist() if n.endswith(".jpg"))
    cats = rng.sample([n for n in names if "/cat." in n], 300)
    dogs = rng.sample([n for n in names if "/dog." in n], 300)
    write_zip(out / "train.zip", [(n, shrink(tz.read(n))) for n in sorted(cats + dogs)])

    with open(src / "solution.csv") as f:
        sol = {int(r["id"]): int(r["label"]) for r in csv.DictReader(f)}
    ez = zipfile.ZipFile(src / "test.zip")
    ids = sorted(rng.sample(sorted(sol), 100))
    write_zip(out / "test.zip", [(f"test/{new}.jpg", shrink(ez.read(f"test/{old}.jpg")))
                                 for new, old in enumerate(ids)])
    with open(out / "solution.csv", "w") as f:
        f.write("id,label\n" + "".join(f"{new},{sol[old]}\n" for new, old in enumerate(ids)))
    with open(out / "test_provenance.csv", "w") as f:
        f.write("id,original_id\n" + "".join(f"{new},{old}\n" for new, old in enumerate(ids)))
    print("train", len(cats) + len(dogs), "test", len(ids), "dogs in test", sum(sol[i] for i in ids))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help=f"the mini set (default: {DEFAULT_SRC})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default: {DEFAULT_OUT})")
    args = parser.parse_args()
    main(args.src, args.out)
