"""Build pipeline/sample/ from the shared mini set (run once; kept for provenance)."""
import io, random, zipfile, csv
from pathlib import Path
from PIL import Image

SRC = Path("/work/shared/data/dogs-vs-cats-mini")
OUT = Path("pipeline/sample")
MAX_SIDE = 128
rng = random.Random(20261123)

def shrink(data: bytes) -> bytes:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img.thumbnail((MAX_SIDE, MAX_SIDE), Image.BILINEAR)
    buf = io.BytesIO(); img.save(buf, "JPEG", quality=85); return buf.getvalue()

def write_zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2013, 9, 25, 0, 0, 0)); z.writestr(info, data)

tz = zipfile.ZipFile(SRC / "train.zip")
names = sorted(n for n in tz.namelist() if n.endswith(".jpg"))
cats = rng.sample([n for n in names if "/cat." in n], 300); dogs = rng.sample([n for n in names if "/dog." in n], 300)
write_zip(OUT / "train.zip", [(n, shrink(tz.read(n))) for n in sorted(cats + dogs)])

sol = {int(r["id"]): int(r["label"]) for r in csv.DictReader(open(SRC / "solution.csv"))}
ez = zipfile.ZipFile(SRC / "test.zip")
ids = sorted(rng.sample(sorted(sol), 100))
write_zip(OUT / "test.zip", [(f"test/{new}.jpg", shrink(ez.read(f"test/{old}.jpg"))) for new, old in enumerate(ids)])
with open(OUT / "solution.csv", "w") as f:
    f.write("id,label\n"); [f.write(f"{new},{sol[old]}\n") for new, old in enumerate(ids)]
with open(OUT / "test_provenance.csv", "w") as f:
    f.write("id,original_id\n"); [f.write(f"{new},{old}\n") for new, old in enumerate(ids)]
print("train", len(cats) + len(dogs), "test", len(ids), "dogs in test", sum(sol[i] for i in ids))
