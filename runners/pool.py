"""Image-text pools for retrieval: what is in them and how to read one image.

A pool is a folder of webdataset tar shards as img2dataset writes them (per
sample ``KEY.jpg`` + ``KEY.txt`` caption + ``KEY.json`` with the ``url``), or a
folder of images with a captions file (CSV with a ``file`` or ``image`` column
and a ``caption`` or ``text`` column; parquet when pyarrow is installed), or a
folder of SQLite databases of caption metadata as The Unmet Promise's authors
query them (``*.db`` with a full-text ``samples`` table of URL and TEXT; their
images are the shards img2dataset downloaded, matched by URL). Listing a
shard reads its tar headers, captions and metadata only; an image's bytes are
read later by offset, so a pool is never unpacked. A shard that cannot be read
to its end is skipped whole and counted.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from runners import protocol
from runners.data import IMAGE_EXTENSIONS

CAPTION_FILES = ("captions.csv", "captions.parquet")


class PoolError(Exception):
    """A pool the user must fix (the message names the path)."""


@dataclass(frozen=True)
class Sample:
    source: str  # the shard or the image file
    key: str  # the sample's key in its shard, or its path in the folder
    caption: str
    ext: str  # image file extension, with the dot
    offset: int = -1  # where the image bytes start in the shard (-1: the whole file)
    size: int = -1
    url: str = ""  # where img2dataset downloaded it from (its .json), when known

    def read(self) -> bytes:
        with open(self.source, "rb") as f:
            if self.offset < 0:
                return f.read()
            f.seek(self.offset)
            return f.read(self.size)

    def image(self) -> Image.Image:
        with Image.open(io.BytesIO(self.read())) as img:
            img.draft("RGB", img.size)
            return img.convert("RGB")


@dataclass
class Pool:
    root: Path
    samples: list[Sample]
    files: list[Path]  # what the pool was read from (its identity for caches)
    bad_shards: list[str] = field(default_factory=list)
    databases: list[Path] = field(default_factory=list)  # metadata databases: captions searched there


def metadata_databases(root: str | os.PathLike) -> list[Path]:
    """The SQLite caption databases of a pool folder (none for shards or images)."""
    root = Path(root)
    return sorted(root.glob("*.db")) if root.is_dir() else []


def open_pool(root: str | os.PathLike, captions: str | None = None) -> Pool:
    root = Path(root)
    if not root.is_dir():
        raise PoolError(f"pool: folder {root} does not exist")
    shards = sorted(root.rglob("*.tar"))
    if shards:
        samples, bad = [], []
        for shard in shards:
            try:
                samples += read_shard(shard)
            except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as e:
                bad.append(f"{shard.name}: {e}")
        return Pool(root, samples, shards, bad)
    path = Path(captions) if captions else next((root / n for n in CAPTION_FILES if (root / n).is_file()), None)
    if path is None:
        raise PoolError(f"pool: {root} has no .tar shards and no {' or '.join(CAPTION_FILES)} "
                        "(set `captions` to the file that pairs images with captions)")
    rows = _caption_rows(path)
    samples = []
    for i, row in enumerate(rows):
        name = row.get("file") or row.get("image") or row.get("path")
        text = row.get("caption") if row.get("caption") is not None else row.get("text")
        if not name or text is None:
            raise PoolError(f"{path}: row {i + 2} needs a file (or image) and a caption (or text) column")
        image = (root / name) if not os.path.isabs(name) else Path(name)
        samples.append(Sample(str(image), str(name), str(text), image.suffix.lower()))
    return Pool(root, samples, [path])


def read_shard(shard: Path) -> list[Sample]:
    """The samples of one webdataset shard: image members paired with their .txt."""
    images: dict[str, tarfile.TarInfo] = {}
    texts: dict[str, str] = {}
    urls: dict[str, str] = {}
    with tarfile.open(shard, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            ext = "." + ext.lower()
            if ext == ".txt":
                texts[key] = tar.extractfile(member).read().decode("utf-8")
            elif ext == ".json":
                try:
                    urls[key] = str(json.loads(tar.extractfile(member).read()).get("url") or "")
                except (ValueError, AttributeError):
                    pass  # metadata that does not parse: the sample keeps its image and caption
            elif ext in IMAGE_EXTENSIONS:
                images[key] = member
    return [Sample(str(shard), key, texts[key].strip(), Path(m.name).suffix.lower(), m.offset_data, m.size,
                   urls.get(key, "")) for key, m in images.items() if key in texts]


def write_shard(path: Path, samples: list[tuple], ext: str = "jpg") -> None:
    """One shard as img2dataset writes it from (key, caption, image bytes[, url]); it
    appears whole or not at all."""
    def write(f) -> None:
        with tarfile.open(fileobj=f, mode="w") as tar:
            for key, caption, image, *url in samples:
                meta = json.dumps({"key": key, "caption": caption, **({"url": url[0]} if url else {})}).encode()
                for suffix, data in ((ext, image), ("txt", caption.encode()), ("json", meta)):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))

    protocol.write_atomic(path, write)


def _caption_rows(path: Path) -> list[dict]:
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise PoolError(f"{path}: reading parquet needs pyarrow (pip install pyarrow), or give a CSV") from None
        return pq.read_table(path).to_pylist()
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PoolError(f"cannot read the captions file {path}: {e}") from None


def identity(pool: Pool) -> list:
    """What changes when the pool changes: its files with size and modification time."""
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in pool.files]
