"""Real handwritten digits laid out exactly as MLE-bench's ``public/`` folder lays out ten more image competitions.

The same digits as :mod:`tests.competition_data` (scikit-learn's 1,797 scans, split once 80/20), written as loose files
in the folders, file names, id styles and CSV headers MLE-bench prepares for each competition (CSVs and image folders
side by side, a ``sample_submission.csv`` in the submission's exact header and row order). ``files`` is the folder
itself (``pipeline download --from public/``); :func:`kaggle_zip` packs any of them into the one zip the Kaggle CLI
delivers. Kept apart from competition_data.py so that each module stays small.

Targets are fixed functions of the digit ``d``:

- APTOS: grade ``d // 2`` (0-4); histopathologic and SIIM: 1 for ``d >= 5`` (SIIM: ``d >= 8``, rarer, as melanoma);
  cassava: class ``d % 5``;
- Plant Pathology 2020: one column per digit group (0-2 healthy, 3-4 multiple_diseases, 5-7 rust, 8-9 scab);
  RANZCR: three to four of the 11 columns per digit (:data:`RANZCR_SETS`); Plant Pathology 2021 and iMet: one or two
  names per digit;
- PetFinder: Pawpularity ``8 + 9 d``; Leaf: ten species; whale: nine identities and ``new_whale`` for 0.

RANZCR and SIIM training images carry patient groups (2-4 images per patient, patients mixing digits).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tests.competition_data import CompetitionData, _hex_ids, _picture, _root, _write_7z, _write_zip, split

PP2020_COLUMNS = ["healthy", "multiple_diseases", "rust", "scab"]
PP2020_OF = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]  # digit -> its column
RANZCR_COLUMNS = ["ETT - Abnormal", "ETT - Borderline", "ETT - Normal", "NGT - Abnormal", "NGT - Borderline",
                  "NGT - Incompletely Imaged", "NGT - Normal", "CVC - Abnormal", "CVC - Borderline", "CVC - Normal",
                  "Swan Ganz Catheter Present"]
RANZCR_SAMPLE = [c for c in RANZCR_COLUMNS if c not in ("CVC - Normal", "Swan Ganz Catheter Present")]
# digit -> its label columns: one ETT, one NGT, one CVC position, Swan Ganz for 9
RANZCR_SETS = [(d % 3, 3 + d % 4, 7 + d % 3) + ((10,) if d == 9 else ()) for d in range(10)]
PP2021_NAMES = ["complex", "frog_eye_leaf_spot", "healthy", "powdery_mildew", "rust", "scab"]
PP2021_SETS = [("healthy",), ("scab",), ("rust",), ("complex",), ("frog_eye_leaf_spot",), ("powdery_mildew",),
               ("frog_eye_leaf_spot", "scab"), ("frog_eye_leaf_spot", "rust"), ("complex", "scab"),
               ("complex", "rust")]
IMET_SETS = [("13",), ("51",), ("13", "79"), ("147",), ("51", "188"), ("1059",), ("147", "79"), ("188",),
             ("1059", "13"), ("2",)]
LEAF_SPECIES = ["Acer_Capillipes", "Acer_Circinatum", "Alnus_Rubra", "Betula_Austrosinensis", "Cornus_Macrophylla",
                "Ilex_Aquifolium", "Magnolia_Heptapeta", "Populus_Nigra", "Quercus_Agrifolia", "Tilia_Tomentosa"]
WHALES = ["new_whale", "w_0027efa", "w_1287fbc", "w_3de579a", "w_4b7b80b", "w_7554f44", "w_98baff9", "w_a6f9d33",
          "w_c4ca5f4", "w_f9ff2e6"]  # digit d -> WHALES[d]: 0 is an unknown whale
PADDY = ["bacterial_leaf_blight", "bacterial_leaf_streak", "bacterial_panicle_blight", "blast", "brown_spot",
         "dead_heart", "downy_mildew", "hispa", "normal", "tungro"]
GRADES = [str(g) for g in range(5)]
BINARY = ["0", "1"]


def _encode(img: Image.Image, name: str) -> bytes:
    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF"}[Path(name).suffix or name]
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _images(folder: Path, names: list[str], images: np.ndarray, size: int, offset: int, rgb: bool = True) -> None:
    """Write each digit as ``folder/<name>`` (the format from the name's extension)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, (name, x) in enumerate(zip(names, images, strict=True)):
        (folder / name).write_bytes(_encode(_picture(x, size, rgb, k + offset, invert=(k + offset) % 3 == 0), name))


def _digit_ids(prefix: str, n: int, length: int) -> list[str]:
    """``n`` distinct deterministic strings of ``length`` decimal digits (no leading zero)."""
    ids, seen, counter = [], set(), 0
    while len(ids) < n:
        h = str(int(hashlib.md5(f"{prefix}-{counter}".encode()).hexdigest(), 16))[:length]
        counter += 1
        if h not in seen and h[0] != "0":
            seen.add(h)
            ids.append(h)
    return ids


def _frame(ids, labels) -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series(list(ids), dtype=object), "label": pd.Series(list(labels), dtype=object)})


def _layout(root, limit, prefix: str, id_of, size: int = 32):
    """The split digits and one id per training and test digit: ``(root, tr_x, tr_y, te_x, te_y, train_ids,
    test_ids)``; ``id_of(prefix, n)`` makes the ids."""
    root = _root(root)
    tr_x, tr_y, te_x, te_y = split(limit)
    ids = id_of(prefix, len(tr_y) + len(te_y))
    return root, tr_x, tr_y, te_x, te_y, ids[: len(tr_y)], ids[len(tr_y):]


def _sample(root: Path, ids, columns: dict) -> Path:
    """sample_submission.csv: the id column, then each column's constant value, every test id in order."""
    path = root / "sample_submission.csv"
    id_name, *rest = columns
    pd.DataFrame({id_name: list(ids), **{c: columns[c] for c in rest}}).to_csv(path, index=False)
    return path


def _patients(n: int, prefix: str) -> list[str]:
    """A patient per training image: runs of 2, 3 and 4 consecutive images (the digits are shuffled already)."""
    out, k = [], 0
    while len(out) < n:
        out += [f"{prefix}{k:06d}"] * (2 + k % 3)
        k += 1
    return out[:n]


# ---------------------------------------------------------------------------------------------------------- layouts


def aptos(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``aptos2019-blindness-detection``::

        train.csv  id_code,diagnosis   12 hex chars, grade 0-4 (digit // 2)
        test.csv   id_code
        train_images/<id_code>.png, test_images/<id_code>.png, sample_submission.csv (id_code,diagnosis = 0)
    """
    root, tr_x, tr_y, te_x, te_y, train_ids, test_ids = _layout(root, limit, "aptos", lambda p, n: _hex_ids(p, n, 12))
    _images(root / "train_images", [f"{i}.png" for i in train_ids], tr_x, size, 0)
    _images(root / "test_images", [f"{i}.png" for i in test_ids], te_x, size, 1)
    train = _frame(train_ids, [GRADES[d // 2] for d in tr_y])
    train.rename(columns={"id": "id_code", "label": "diagnosis"}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id_code": test_ids}).to_csv(root / "test.csv", index=False)
    sample = _sample(root, test_ids, {"id_code": None, "diagnosis": 0})
    return CompetitionData("aptos2019-blindness-detection", root, [root], GRADES,
                           _frame(test_ids, [GRADES[d // 2] for d in te_y]), train, sample_submission=sample,
                           kind="ordinal")


def histopathologic(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``histopathologic-cancer-detection``::

        train_labels.csv  id,label   40 hex chars, 1 for digits 5-9
        train/<id>.tif, test/<id>.tif (TIFF, RGB), sample_submission.csv (id,label = 0)
    """
    root, tr_x, tr_y, te_x, te_y, train_ids, test_ids = _layout(root, limit, "histo", lambda p, n: _hex_ids(p, n, 40))
    _images(root / "train", [f"{i}.tif" for i in train_ids], tr_x, size, 0)
    _images(root / "test", [f"{i}.tif" for i in test_ids], te_x, size, 1)
    train = _frame(train_ids, [BINARY[int(d >= 5)] for d in tr_y])
    train.to_csv(root / "train_labels.csv", index=False)
    sample = _sample(root, test_ids, {"id": None, "label": 0})
    return CompetitionData("histopathologic-cancer-detection", root, [root], BINARY,
                           _frame(test_ids, [BINARY[int(d >= 5)] for d in te_y]), train, positive="1",
                           sample_submission=sample)


def plant_pathology_2020(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``plant-pathology-2020-fgvc7``::

        train.csv  image_id,healthy,multiple_diseases,rust,scab   Train_<n>, one 1 per row (PP2020_OF)
        test.csv   image_id                                      Test_<n>
        images/Train_<n>.jpg and images/Test_<n>.jpg: one folder
        sample_submission.csv  image_id,healthy,multiple_diseases,rust,scab = 0.25
    """
    root, tr_x, tr_y, te_x, te_y, _, _ = _layout(root, limit, "pp2020", lambda p, n: list(range(n)))
    train_ids, test_ids = [f"Train_{n}" for n in range(len(tr_y))], [f"Test_{n}" for n in range(len(te_y))]
    _images(root / "images", [f"{i}.jpg" for i in train_ids], tr_x, size, 0)
    _images(root / "images", [f"{i}.jpg" for i in test_ids], te_x, size, 1)
    onehot = np.eye(4, dtype=int)[[PP2020_OF[d] for d in tr_y]]
    pd.DataFrame({"image_id": train_ids, **{c: onehot[:, j] for j, c in enumerate(PP2020_COLUMNS)}}).to_csv(
        root / "train.csv", index=False)
    pd.DataFrame({"image_id": test_ids}).to_csv(root / "test.csv", index=False)
    sample = _sample(root, test_ids, {"image_id": None, **dict.fromkeys(PP2020_COLUMNS, 0.25)})
    names = [(PP2020_COLUMNS[PP2020_OF[d]],) for d in tr_y]
    return CompetitionData("plant-pathology-2020-fgvc7", root, [root], PP2020_COLUMNS,
                           _frame(test_ids, [(PP2020_COLUMNS[PP2020_OF[d]],) for d in te_y]),
                           _frame(train_ids, names), sample_submission=sample, kind="multilabel")


def _uids(prefix: str, n: int) -> list[str]:
    """DICOM-style study ids: ``1.2.826.0.1.3680043.8.498.<38 digits>``."""
    return [f"1.2.826.0.1.3680043.8.498.{i}" for i in _digit_ids(prefix, n, 38)]


def ranzcr(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``ranzcr-clip-catheter-line-classification``::

        train.csv  StudyInstanceUID,<the 11 RANZCR_COLUMNS>,PatientID   ids with dots; PatientID runs of 2-4
        train_annotations.csv  StudyInstanceUID,label,data   (a few rows; not a target)
        train/<uid>.jpg, test/<uid>.jpg (grey)
        sample_submission.csv  StudyInstanceUID,<the 9 RANZCR_SAMPLE columns> = 0
    """
    root, tr_x, tr_y, te_x, te_y, train_ids, test_ids = _layout(root, limit, "ranzcr", _uids)
    _images(root / "train", [f"{i}.jpg" for i in train_ids], tr_x, size, 0, rgb=False)
    _images(root / "test", [f"{i}.jpg" for i in test_ids], te_x, size, 1, rgb=False)
    cells = np.zeros((len(tr_y), len(RANZCR_COLUMNS)), dtype=int)
    for row, d in enumerate(tr_y):
        cells[row, list(RANZCR_SETS[d])] = 1
    patients = _patients(len(tr_y), "ec")
    pd.DataFrame({"StudyInstanceUID": train_ids, **{c: cells[:, j] for j, c in enumerate(RANZCR_COLUMNS)},
                  "PatientID": patients}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"StudyInstanceUID": train_ids[:3], "label": "CVC - Normal",
                  "data": "[[1487, 1279], [1477, 1168]]"}).to_csv(root / "train_annotations.csv", index=False)
    sample = _sample(root, test_ids, {"StudyInstanceUID": None, **dict.fromkeys(RANZCR_SAMPLE, 0)})

    def names(digits):
        return [tuple(RANZCR_COLUMNS[j] for j in sorted(RANZCR_SETS[d])) for d in digits]

    return CompetitionData("ranzcr-clip-catheter-line-classification", root, [root], RANZCR_COLUMNS,
                           _frame(test_ids, names(te_y)), _frame(train_ids, names(tr_y)), sample_submission=sample,
                           kind="multilabel", groups=dict(zip(train_ids, patients, strict=True)))


def siim(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``siim-isic-melanoma-classification``::

        train.csv  image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target
                   ISIC_<7 digits>, IP_<7 digits> (runs of 2-4), target 1 for digits 8-9
        test.csv   image_name,patient_id,sex,age_approx,anatom_site_general_challenge
        jpeg/train/<image_name>.jpg, jpeg/test/<image_name>.jpg, sample_submission.csv (image_name,target = 0)
    """
    root, tr_x, tr_y, te_x, te_y, train_ids, test_ids = _layout(
        root, limit, "siim", lambda p, n: [f"ISIC_{i}" for i in _digit_ids(p, n, 7)])
    _images(root / "jpeg" / "train", [f"{i}.jpg" for i in train_ids], tr_x, size, 0)
    _images(root / "jpeg" / "test", [f"{i}.jpg" for i in test_ids], te_x, size, 1)
    target = [int(d >= 8) for d in tr_y]
    patients = [f"IP_{p[2:]}" for p in _patients(len(tr_y), "IP")]
    meta = {"sex": "male", "age_approx": 45.0, "anatom_site_general_challenge": "torso"}
    pd.DataFrame({"image_name": train_ids, "patient_id": patients, **meta,
                  "diagnosis": ["melanoma" if t else "nevus" for t in target],
                  "benign_malignant": ["malignant" if t else "benign" for t in target], "target": target}).to_csv(
        root / "train.csv", index=False)
    pd.DataFrame({"image_name": test_ids, "patient_id": "IP_0000001", **meta}).to_csv(root / "test.csv", index=False)
    sample = _sample(root, test_ids, {"image_name": None, "target": 0})
    return CompetitionData("siim-isic-melanoma-classification", root, [root], BINARY,
                           _frame(test_ids, [BINARY[int(d >= 8)] for d in te_y]),
                           _frame(train_ids, [BINARY[t] for t in target]), positive="1", sample_submission=sample,
                           groups=dict(zip(train_ids, patients, strict=True)))


def cassava(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``cassava-leaf-disease-classification``::

        train.csv  image_id,label   <10 digits>.jpg (the id holds the extension), label digit % 5
        train_images/<image_id>, test_images/<image_id>, label_num_to_disease_map.json,
        sample_submission.csv (image_id,label = 4)
    """
    root, tr_x, tr_y, te_x, te_y, train_ids, test_ids = _layout(
        root, limit, "cassava", lambda p, n: [f"{i}.jpg" for i in _digit_ids(p, n, 10)])
    _images(root / "train_images", train_ids, tr_x, size, 0)
    _images(root / "test_images", test_ids, te_x, size, 1)
    train = _frame(train_ids, [GRADES[d % 5] for d in tr_y])
    train.rename(columns={"id": "image_id"}).to_csv(root / "train.csv", index=False)
    (root / "label_num_to_disease_map.json").write_text(
        '{"0": "Cassava Bacterial Blight (CBB)", "1": "Cassava Brown Streak Disease (CBSD)", "2": "Cassava Green '
        'Mottle (CGM)", "3": "Cassava Mosaic Disease (CMD)", "4": "Healthy"}')
    sample = _sample(root, test_ids, {"image_id": None, "label": 4})
    return CompetitionData("cassava-leaf-disease-classification", root, [root], GRADES,
                           _frame(test_ids, [GRADES[d % 5] for d in te_y]), train, sample_submission=sample)


def plant_pathology_2021(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``plant-pathology-2021-fgvc8``::

        train.csv  image,labels   <16 hex>.jpg, names space-separated (PP2021_SETS; "frog_eye_leaf_spot scab")
        train_images/<image>, test_images/<image>, sample_submission.csv (image,labels = healthy)
    """
    root, tr_x, tr_y, te_x, te_y, train_ids, test_ids = _layout(
        root, limit, "pp2021", lambda p, n: [f"{h}.jpg" for h in _hex_ids(p, n, 16)])
    _images(root / "train_images", train_ids, tr_x, size, 0)
    _images(root / "test_images", test_ids, te_x, size, 1)
    pd.DataFrame({"image": train_ids, "labels": [" ".join(PP2021_SETS[d]) for d in tr_y]}).to_csv(
        root / "train.csv", index=False)
    sample = _sample(root, test_ids, {"image": None, "labels": "healthy"})
    return CompetitionData("plant-pathology-2021-fgvc8", root, [root], PP2021_NAMES,
                           _frame(test_ids, [PP2021_SETS[d] for d in te_y]),
                           _frame(train_ids, [PP2021_SETS[d] for d in tr_y]), sample_submission=sample,
                           kind="multilabel")


PETFINDER_META = ["Subject Focus", "Eyes", "Face", "Near", "Action", "Accessory", "Group", "Collage", "Human",
                  "Occlusion", "Info", "Blur"]


def petfinder(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``petfinder-pawpularity-score``::

        train.csv  Id,<12 PETFINDER_META 0/1 columns>,Pawpularity   32 hex chars, Pawpularity 8 + 9 x digit
        test.csv   Id,<the 12 metadata columns>
        train/<Id>.jpg, test/<Id>.jpg, sample_submission.csv (Id,Pawpularity = 50.0)
    """
    root, tr_x, tr_y, te_x, te_y, train_ids, test_ids = _layout(root, limit, "pet", lambda p, n: _hex_ids(p, n, 32))
    _images(root / "train", [f"{i}.jpg" for i in train_ids], tr_x, size, 0)
    _images(root / "test", [f"{i}.jpg" for i in test_ids], te_x, size, 1)
    meta = {c: (np.arange(len(tr_y)) + j) % 2 for j, c in enumerate(PETFINDER_META)}
    score = [8 + 9 * int(d) for d in tr_y]
    pd.DataFrame({"Id": train_ids, **meta, "Pawpularity": score}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Id": test_ids, **dict.fromkeys(PETFINDER_META, 0)}).to_csv(root / "test.csv", index=False)
    sample = _sample(root, test_ids, {"Id": None, "Pawpularity": 50.0})
    return CompetitionData("petfinder-pawpularity-score", root, [root], ["Pawpularity"],
                           _frame(test_ids, [8.0 + 9 * int(d) for d in te_y]), _frame(train_ids, map(float, score)),
                           sample_submission=sample, kind="regression")


def leaf(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``leaf-classification``::

        train.csv  id,species,margin1..margin64,shape1..shape64,texture1..texture64   ids 1..N shuffled over both
        test.csv   id,<the 192 features>
        images/<id>.jpg (grey silhouettes; training and test in one folder)
        sample_submission.csv  id,<the species, alphabetical> = 1/10
    """
    root, tr_x, tr_y, te_x, te_y, train_ids, test_ids = _layout(
        root, limit, "leaf", lambda p, n: [int(i) for i in np.random.default_rng(0).permutation(n) + 1])
    _images(root / "images", [f"{i}.jpg" for i in train_ids], tr_x, size, 0, rgb=False)
    _images(root / "images", [f"{i}.jpg" for i in test_ids], te_x, size, 1, rgb=False)
    features = [f"{kind}{n}" for kind in ("margin", "shape", "texture") for n in range(1, 65)]
    rng = np.random.default_rng(1)

    def table(n):
        return pd.DataFrame(rng.random((n, len(features))).round(6), columns=features)

    train = _frame(train_ids, [LEAF_SPECIES[d] for d in tr_y])
    pd.concat([train.rename(columns={"label": "species"}), table(len(tr_y))], axis=1).to_csv(root / "train.csv",
                                                                                             index=False)
    pd.concat([pd.DataFrame({"id": test_ids}), table(len(te_y))], axis=1).to_csv(root / "test.csv", index=False)
    truth = _frame(test_ids, [LEAF_SPECIES[d] for d in te_y]).sort_values("id", ignore_index=True)
    sample = _sample(root, truth["id"], {"id": None, **dict.fromkeys(sorted(LEAF_SPECIES), 0.1)})
    return CompetitionData("leaf-classification", root, [root], sorted(LEAF_SPECIES), truth, train,
                           sample_submission=sample)


def whale(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``whale-categorization-playground``::

        train.csv  Image,Id   <8 hex>.jpg, the identity WHALES[digit] (new_whale for 0)
        train/<Image>, test/<Image>, sample_submission.csv (Image,Id = "new_whale w_0027efa ...", five names)
    """
    root, tr_x, tr_y, te_x, te_y, train_ids, test_ids = _layout(
        root, limit, "whale", lambda p, n: [f"{h}.jpg" for h in _hex_ids(p, n, 8)])
    _images(root / "train", train_ids, tr_x, size, 0)
    _images(root / "test", test_ids, te_x, size, 1)
    pd.DataFrame({"Image": train_ids, "Id": [WHALES[d] for d in tr_y]}).to_csv(root / "train.csv", index=False)
    sample = _sample(root, test_ids, {"Image": None, "Id": " ".join(WHALES[:5])})
    return CompetitionData("whale-categorization-playground", root, [root], sorted(WHALES),
                           _frame(test_ids, [WHALES[d] for d in te_y]), _frame(train_ids, [WHALES[d] for d in tr_y]),
                           sample_submission=sample, kind="topk")


def imet(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``imet-2020-fgvc7``::

        train.csv   id,attribute_ids   32 hex chars, attribute numbers space-separated (IMET_SETS)
        labels.csv  attribute_id,attribute_name
        train/<id>.png, test/<id>.png, sample_submission.csv (id,attribute_ids = 13)
    """
    root, tr_x, tr_y, te_x, te_y, train_ids, test_ids = _layout(root, limit, "imet", lambda p, n: _hex_ids(p, n, 32))
    _images(root / "train", [f"{i}.png" for i in train_ids], tr_x, size, 0)
    _images(root / "test", [f"{i}.png" for i in test_ids], te_x, size, 1)
    pd.DataFrame({"id": train_ids, "attribute_ids": [" ".join(IMET_SETS[d]) for d in tr_y]}).to_csv(
        root / "train.csv", index=False)
    names = sorted({a for s in IMET_SETS for a in s})
    pd.DataFrame({"attribute_id": names, "attribute_name": [f"tag::{a}" for a in names]}).to_csv(
        root / "labels.csv", index=False)
    sample = _sample(root, test_ids, {"id": None, "attribute_ids": "13"})
    return CompetitionData("imet-2020-fgvc7", root, [root], names,
                           _frame(test_ids, [tuple(sorted(IMET_SETS[d])) for d in te_y]),
                           _frame(train_ids, [tuple(sorted(IMET_SETS[d])) for d in tr_y]), sample_submission=sample,
                           kind="multilabel")


def paddy(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``paddy-disease-classification``::

        train.csv  image_id,label,variety,age   <6 digits>.jpg, the disease PADDY[digit]
        train_images/<label>/<image_id>, test_images/<image_id>, sample_submission.csv (image_id,label = blast)
    """
    root, tr_x, tr_y, te_x, te_y, train_ids, test_ids = _layout(
        root, limit, "paddy", lambda p, n: [f"{i}.jpg" for i in _digit_ids(p, n, 6)])
    for d, disease in enumerate(PADDY):
        mine = [k for k, y in enumerate(tr_y) if y == d]
        _images(root / "train_images" / disease, [train_ids[k] for k in mine], tr_x[mine], size, d)
    _images(root / "test_images", test_ids, te_x, size, 1)
    train = _frame(train_ids, [PADDY[d] for d in tr_y])
    train.rename(columns={"id": "image_id"}).assign(variety="ADT45", age=45).to_csv(root / "train.csv", index=False)
    sample = _sample(root, test_ids, {"image_id": None, "label": "blast"})
    return CompetitionData("paddy-disease-classification", root, [root], PADDY,
                           _frame(test_ids, [PADDY[d] for d in te_y]), train, sample_submission=sample)


def aerial_cactus(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``aerial-cactus-identification`` as MLE-bench lays it out: train.csv (id,has_cactus; id = <32 hex>.jpg),
    train/<id>, test/<id>, sample_submission.csv (id,has_cactus = 0.5); has_cactus 1 for digits 5-9."""
    root, tr_x, tr_y, te_x, te_y, train_ids, test_ids = _layout(
        root, limit, "aerial-cactus", lambda p, n: [f"{h}.jpg" for h in _hex_ids(p, n, 32)])
    _images(root / "train", train_ids, tr_x, size, 0)
    _images(root / "test", test_ids, te_x, size, 1)
    train = _frame(train_ids, [BINARY[int(d >= 5)] for d in tr_y])
    train.rename(columns={"label": "has_cactus"}).to_csv(root / "train.csv", index=False)
    truth = _frame(test_ids, [BINARY[int(d >= 5)] for d in te_y]).sort_values("id", ignore_index=True)
    sample = _sample(root, truth["id"], {"id": None, "has_cactus": 0.5})
    return CompetitionData("aerial-cactus-identification", root, [root], BINARY, truth, train, positive="1",
                           sample_submission=sample)


def invasive(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``invasive-species-monitoring``, its original archives side by side in the folder::

        train.7z                  train/<n>.jpg          numbered from 1
        test.7z                   test/<n>.jpg           numbered from 1
        train_labels.csv.zip      train_labels.csv       name,invasive   (1 for digits 5-9)
        sample_submission.csv.zip sample_submission.csv  name,invasive = 0.5
    """
    root, tr_x, tr_y, te_x, te_y, _, _ = _layout(root, limit, "invasive", lambda p, n: list(range(n)))
    train_ids, test_ids = list(range(1, len(tr_y) + 1)), list(range(1, len(te_y) + 1))

    def members(folder, ids, images, offset):
        return ((f"{folder}/{i}.jpg", _encode(_picture(x, size, True, k + offset), ".jpg"))
                for k, (i, x) in enumerate(zip(ids, images, strict=True)))

    _write_7z(root / "train.7z", members("train", train_ids, tr_x, 0))
    _write_7z(root / "test.7z", members("test", test_ids, te_x, 1))
    train = _frame(train_ids, [BINARY[int(d >= 5)] for d in tr_y])
    labels = train.rename(columns={"id": "name", "label": "invasive"}).to_csv(index=False).encode()
    _write_zip(root / "train_labels.csv.zip", [("train_labels.csv", labels)])
    sample = pd.DataFrame({"name": test_ids, "invasive": 0.5}).to_csv(index=False).encode()
    _write_zip(root / "sample_submission.csv.zip", [("sample_submission.csv", sample)])
    return CompetitionData("invasive-species-monitoring", root, [root], BINARY,
                           _frame(test_ids, [BINARY[int(d >= 5)] for d in te_y]), train, positive="1")


IWILDCAM_CATEGORIES = [0, 2, 3, 4, 6, 7, 8, 9, 10, 372]  # digit d -> category IWILDCAM_CATEGORIES[d] (0: empty)


def iwildcam(root, size: int = 32, limit: int | None = None) -> CompetitionData:
    """``iwildcam-2020-fgvc7``::

        iwildcam2020_train_annotations.json  {"images": [{"id", "file_name": "<id>.jpg", "location", ...}],
                                              "annotations": [{"id", "image_id", "category_id"}], "categories": [...]}
                                             one annotation per image (two, the same, for every seventh)
        iwildcam2020_test_information.json   {"images": [...], "categories": [...]}
        train/<id>.jpg, test/<id>.jpg (ids: 36-character UUID-like), sample_submission.csv (Id,Category = 0)

    Locations (camera traps, the groups): runs of 2-4 consecutive training images.
    """
    import json

    def uuid(prefix, n):
        return [f"{h[:8]}-{h[8:12]}-11ea-{h[12:16]}-{h[16:28]}" for h in _hex_ids(prefix, n, 28)]

    root, tr_x, tr_y, te_x, te_y, train_ids, test_ids = _layout(root, limit, "iwildcam", uuid)
    _images(root / "train", [f"{i}.jpg" for i in train_ids], tr_x, size, 0)
    _images(root / "test", [f"{i}.jpg" for i in test_ids], te_x, size, 1)
    locations = [int(p[1:]) for p in _patients(len(tr_y), "L")]
    categories = [{"id": c, "name": f"species {c}", "count": 1} for c in IWILDCAM_CATEGORIES]
    images = [{"id": i, "file_name": f"{i}.jpg", "location": loc, "seq_id": f"s{k}", "width": size, "height": size}
              for k, (i, loc) in enumerate(zip(train_ids, locations, strict=True))]
    notes = [{"id": f"a{k}-{n}", "image_id": i, "category_id": IWILDCAM_CATEGORIES[d], "count": 1}
             for k, (i, d) in enumerate(zip(train_ids, tr_y, strict=True)) for n in range(1 + (k % 7 == 0))]
    (root / "iwildcam2020_train_annotations.json").write_text(json.dumps(
        {"images": images, "annotations": notes, "categories": categories, "info": {"version": "digits"}}))
    (root / "iwildcam2020_test_information.json").write_text(json.dumps(
        {"images": [{"id": i, "file_name": f"{i}.jpg", "location": 900} for i in test_ids], "categories": categories}))
    sample = _sample(root, test_ids, {"Id": None, "Category": 0})
    classes = sorted(str(c) for c in IWILDCAM_CATEGORIES)
    return CompetitionData("iwildcam-2020-fgvc7", root, [root], classes,
                           _frame(test_ids, [str(IWILDCAM_CATEGORIES[d]) for d in te_y]),
                           _frame([f"{i}.jpg" for i in train_ids], [str(IWILDCAM_CATEGORIES[d]) for d in tr_y]),
                           sample_submission=sample, groups={f"{i}.jpg": str(loc) for i, loc in
                                                             zip(train_ids, locations, strict=True)})


def kaggle_zip(data: CompetitionData, out_dir: Path) -> CompetitionData:
    """The layout as ``kaggle competitions download -c SLUG`` delivers it: one ``<slug>.zip`` holding every file of
    the folder at its top level (the folder's files are left in place)."""
    files = sorted(p for p in data.root.rglob("*") if p.is_file())
    archive = _write_zip(Path(out_dir) / f"{data.competition}.zip",
                         ((p.relative_to(data.root).as_posix(), p.read_bytes()) for p in files))
    with zipfile.ZipFile(archive) as z:
        assert len(z.namelist()) == len(files)
    return CompetitionData(data.competition, data.root, [archive], data.classes, data.truth, data.train,
                           data.positive, data.sample_submission, data.kind, data.groups)


MLEBENCH = {"aptos2019-blindness-detection": aptos, "histopathologic-cancer-detection": histopathologic,
            "plant-pathology-2020-fgvc7": plant_pathology_2020, "ranzcr-clip-catheter-line-classification": ranzcr,
            "siim-isic-melanoma-classification": siim, "cassava-leaf-disease-classification": cassava,
            "plant-pathology-2021-fgvc8": plant_pathology_2021, "petfinder-pawpularity-score": petfinder,
            "leaf-classification": leaf, "whale-categorization-playground": whale, "imet-2020-fgvc7": imet,
            "paddy-disease-classification": paddy, "aerial-cactus-identification": aerial_cactus,
            "invasive-species-monitoring": invasive, "iwildcam-2020-fgvc7": iwildcam}
