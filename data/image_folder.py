"""A generic labelled image set: `<class>/<image>` files in a folder or inside a .zip.

The CIFAR-10 JPEG zips in shared/datasets are read this way (zip members are read without
extracting). Class indices follow the sorted class-folder names. Images are decoded once into memory
as uint8 NCHW; all images must share one size unless data.image_size is set.
"""
from __future__ import annotations

import io
import sys
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2.functional import pil_to_tensor

from common.errors import DataError
from common.registry import register
from common.schema import require
from .base import DECODE_ERRORS, DataInfo, TensorData, fit_size

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _members(path: Path):
    """(class name, where (for messages), reader of the file's bytes) for every image under path."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in EXTENSIONS)
        return [(p.parent.name, str(p), p.read_bytes) for p in files], None
    zf = zipfile.ZipFile(path)
    names = sorted(n for n in zf.namelist() if PurePosixPath(n).suffix.lower() in EXTENSIONS)
    return [(PurePosixPath(n).parent.name, f"member {n} of {path}", (lambda n=n: zf.read(n)))
            for n in names], zf


class Corrupt(Exception):
    """A member that cannot be used: undecodable, or a JPEG the decoder does not read exactly."""


GREY_BANDS = {("L",), ("L", "A"), ("1",), ("I",), ("F",)}


def decode(data: bytes, mode: str, size: int | None) -> tuple[torch.Tensor, bool]:
    """One image as uint8 CHW, and whether the file itself is greyscale; Corrupt (with the reason)
    when it cannot be decoded, or decodes only because the decoder papers over damage (jpeg_damage)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            tile = im.tile[0] if im.tile else None
            im.load()
            damage = jpeg_damage(data, im, tile) if im.format == "JPEG" else None
            grey = im.getbands() in GREY_BANDS
            img = pil_to_tensor(im.convert(mode))
    except DECODE_ERRORS as e:
        raise Corrupt("not an image PIL can read" if isinstance(e, UnidentifiedImageError)
                      else str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__) from None
    if damage:
        raise Corrupt(damage)
    return (fit_size(img.unsqueeze(0), size)[0] if size is not None else img), grey


SOI, EOI = b"\xff\xd8", b"\xff\xd9"
# Markers that may follow the first scan: tables, another scan, restart intervals, APPn, COM, the end.
LATER_MARKERS = frozenset([0xC4, 0xD9, 0xDA, 0xDB, 0xDD, 0xFE, *range(0xE0, 0xF0)])


def _same_pixels(im: Image.Image, tile, data: bytes) -> bool:
    """Whether `data`, a JPEG stream with the headers of the decoded `im` (whose first tile is
    `tile`), decodes to the same pixels. Through PIL's decoder directly, skipping its Python header
    parse (the checks then add 5 s, not 16 s, to the 12 s load of CIFAR-10's 50,000 training JPEGs
    on 2 cores); through Image.open where those internals differ."""
    try:
        name, extents, offset, args = tile
        decoder = Image._getdecoder(im.mode, name, args, im.decoderconfig)
        out = Image.core.new(im.mode, im.size)
        decoder.setimage(out, extents)
        try:
            decoder.decode(data[offset:])
        finally:
            decoder.cleanup()
        return out.chop_difference(im.im).getbbox() is None
    except (AttributeError, TypeError, ValueError):
        with Image.open(io.BytesIO(data)) as other:
            return np.array_equal(np.asarray(other), np.asarray(im))


def jpeg_damage(data: bytes, im: Image.Image, tile) -> str | None:
    """Why the JPEG stream `data`, decoded as `im` (`tile`: its first tile before loading), is
    corrupt, or None. libjpeg (under PIL) decodes damaged entropy-coded
    data without a word (a warning PIL drops), filling what it cannot read with zeros, so the damage
    shows in what the decoder does not do: (1) meet a marker that has no place inside a scan;
    (2) for a baseline image, read all its scan data: 4 bytes less that decode the same were never read
    (the Huffman codes lost their alignment and ended early); (3) find all it needs: 32 bytes more
    that decode differently were needed (it ran out and filled zeros). On the 60,000 CIFAR-10 JPEGs
    (train and test zips), all clean, none is flagged (their last 1–3 bytes are always read); of 2,000
    with 5 random bytes of their scan changed, 74% are flagged and 3% fail to decode, with 20 bytes
    87% and 10% (the rest re-synchronised: Huffman codes often do)."""
    if not data.startswith(SOI):
        return "not a JPEG stream"
    scan = data.find(b"\xff\xda")
    if scan < 0:
        return "no scan data"
    i = scan + 2
    while (i := data.find(b"\xff", i + 1)) >= 0 and i + 1 < len(data):
        marker = data[i + 1]
        if marker not in (0x00, 0xFF) and not 0xD0 <= marker <= 0xD7 and marker not in LATER_MARKERS:
            return f"marker 0xFF{marker:02X} inside the scan data"
    baseline = data.find(b"\xff\xc0") >= 0 or data.find(b"\xff\xc1") >= 0
    if not baseline or not data.endswith(EOI):
        return None  # progressive or with trailing data: the markers are all that is checked
    body = data[:-2]
    if _same_pixels(im, tile, body[:-4] + EOI):
        return "scan data the decoder never reads (the coded data lost its alignment)"
    if not _same_pixels(im, tile, body + b"\x55" * 32 + EOI):
        return "the decoder runs out of scan data"
    return None


def check_config(cfg, path: str):
    require(cfg.path, f"{path}.path: image_folder needs data.path=<folder or .zip of class folders>")


CORRUPT_LEFT_OUT = 0.01  # at most this fraction of corrupt members is left out (with a warning)


def report_corrupt(corrupt: list[tuple[str, str]], total: int, path: Path):
    """Corrupt members: up to CORRUPT_LEFT_OUT of the set are left out with one warning line (a few
    damaged files in 50,000 should not stop a run, nor train it on noise); more is a DataError."""
    if not corrupt:
        return
    where, why = corrupt[0]
    more = f" and {len(corrupt) - 1} more" if len(corrupt) > 1 else ""
    if len(corrupt) > CORRUPT_LEFT_OUT * total:
        raise DataError(f"{len(corrupt)} of {total} images under {path} are corrupt: {where} ({why}){more}; "
                        f"delete or replace them")
    print(f"warning: left out {len(corrupt)} corrupt image(s) of {total} under {path}: {where} ({why}){more}",
          file=sys.stderr)


# Decoded sets kept in memory for the process (keyed by the file's identity and the decoding settings):
# CIFAR-10's 50,000 JPEGs take ~20 s to decode on 2 cores, and scripts/results.py reads them for each
# of its runs, its classifier and its real row. Callers must not write into the tensors they get.
_DECODED: dict[tuple, TensorData] = {}
KEEP_DECODED = 2  # a train and a test split


@register("dataset", "image_folder", check_config=check_config, splits=("train",))  # its split is its path
def load(cfg, seed: int = 0) -> TensorData:
    path = Path(cfg.path)
    if not path.exists():
        raise DataError(f"image folder {path} not found: set data.path to a folder or .zip of "
                        f"<class>/<image> files")
    if not path.is_file():  # a folder's files may change without its own mtime changing: never kept
        return decode_all(path, cfg)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, cfg.channels, cfg.image_size)
    if key not in _DECODED:
        _DECODED[key] = decode_all(path, cfg)
        while len(_DECODED) > KEEP_DECODED:
            _DECODED.pop(next(iter(_DECODED)))
    return _DECODED[key]


def decode_all(path: Path, cfg) -> TensorData:
    """Every image under `path` decoded to uint8 NCHW, with its class folder's index as label."""
    try:
        members, zf = _members(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable zip file ({type(e).__name__}): check the download") from None
    if not members:
        if zf is not None:
            zf.close()
        raise DataError(f"no images ({', '.join(EXTENSIONS)}) under {path}: expected <class>/<image> files")
    loose = next((where for c, where, _ in members if not c), None)
    if loose is not None:
        if zf is not None:
            zf.close()
        raise DataError(f"{loose} is not in a class folder: image_folder reads <class>/<image> files, so put "
                        f"each image under a folder named for its class")
    classes = sorted({c for c, _, _ in members})
    index = {c: i for i, c in enumerate(classes)}
    mode = "L" if cfg.channels == 1 else "RGB"

    def load_one(member):
        cls, where, read = member
        try:
            return decode(read(), mode, cfg.image_size), index[cls]
        except (Corrupt, zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:  # reading: a bad CRC
            return None, (where, str(e) or type(e).__name__)

    try:
        loaded = [load_one(member) for member in members]
    finally:
        if zf is not None:
            zf.close()
    if mode == "RGB" and loaded and all(img is None or img[1] for img, _ in loaded):
        raise DataError(f"every image under {path} is greyscale and the config reads colour (data.channels "
                        f"null or 3): set data.channels=1, or point data.path at colour images")
    images = [img[0] for img, _ in loaded if img is not None]
    labels = [label for img, label in loaded if img is not None]
    corrupt = [why for img, why in loaded if img is None]
    report_corrupt(corrupt, len(members), path)
    if len({tuple(i.shape) for i in images}) > 1:
        raise DataError(f"images under {path} differ in size: set data.image_size to resize them")
    x = torch.stack(images)
    info = DataInfo("image_folder", tuple(x.shape[1:]), len(classes), classes=tuple(classes))
    return TensorData(x, torch.tensor(labels, dtype=torch.int64), info)
