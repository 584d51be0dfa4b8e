"""Label maps in and out of COCO instance files, the format label editors (CVAT, Label Studio) exchange.

Writing: :class:`CocoWriter` takes label maps frame by frame and keeps only
each object's compressed RLE (pycocotools), never the maps. The file holds
``info`` and ``licenses`` (empty, as CVAT writes them), one ``images`` entry
per frame (ids from 1, file name and size), one category per object id
(``category_id`` = the object id, named ``object_<id>`` or from a labels
file) and one annotation per object per frame where it is present:
compressed RLE ``segmentation`` (``counts`` a string), ``area``, ``bbox``,
``iscrowd`` 0 and ``track_id`` (the object id again).

Reading: :func:`read_coco` loads and checks a file (nothing is decoded yet);
:meth:`CocoInstances.label_map` decodes one image's annotations (compressed
or uncompressed RLE, or polygons) into a ``[H, W] uint8`` label map. An
annotation's object id is its ``track_id`` when present, else its
``category_id``. Every limit is checked before pycocotools decodes anything:

- the file may be at most :data:`MAX_COCO_BYTES` long, with at most
  :data:`MAX_ANNOTATIONS_PER_IMAGE` annotations on an image (each one is
  decoded at the image's full size);
- an RLE may have at most H*W + 1 runs, and a compressed ``counts`` string at
  most H*W + 16 characters (pycocotools writes one character per run of
  fewer than 16 pixels, more for longer runs, so no mask needs more);
- an annotation's polygons may have at most H*W vertices in all, and outlines
  at most H*W pixels long in all (pycocotools draws each outline pixel by
  pixel, so a million far-apart vertices would take gigabytes);
- ``file_name`` must stay inside its folder: no ``..``, no absolute path, no
  NUL byte, and no two names whose stems are equal once case is folded.

:func:`masks_to_coco` and :func:`coco_to_masks` convert a folder of palette
PNGs to a COCO file and back; the round trip gives the same label maps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from pycocotools import mask as mask_utils

from dinotrack.files import atomic_write_text, partial_path
from dinotrack.inputs import folded, path_problem, printable, too_many_pixels
from dinotrack.masks import MAX_ID, object_ids, read_label_map, write_label_map
from dinotrack.structs import DinotrackError, UsageError

COCO_FILE = "annotations.coco.json"
MAX_COCO_BYTES = 256 * 1024 * 1024
"""Largest COCO file read (256 MiB). A 1500-frame video with five objects exports about 10 MB."""
MAX_ANNOTATIONS_PER_IMAGE = 1024
"""Most annotations on one image: four per possible object id, and more than any label editor writes."""
_RLE_SLACK = 16
_CVAT_FRAME = re.compile(r"frame_(\d+)")
"""How CVAT names the frames of a video task (``frame_000012``)."""


def category_name(object_id: int, labels: Mapping[int, str]) -> str:
    """The category name of ``object_id``: its label, else ``object_<id>``."""
    return labels.get(object_id, f"object_{object_id}")


class CocoWriter:
    """A COCO instances file built frame by frame: :meth:`add` each frame's label map, then :meth:`write`.

    Only the RLE strings are kept. ``labels`` (``{id: name}``) name the
    categories; naming an id that no frame holds is an error at :meth:`write`.
    """

    def __init__(self, labels: Mapping[int, str] | None = None) -> None:
        self.labels = dict(labels or {})
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.ids: set[int] = set()

    def add(self, file_name: str, ids: np.ndarray) -> None:
        """Add one image named ``file_name`` with its ``[H, W] uint8`` label map."""
        height, width = ids.shape
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": width, "height": height, "license": 0})
        for object_id in object_ids(ids):
            rle = mask_utils.encode(np.asfortranarray(ids == object_id, dtype=np.uint8))
            self.annotations.append({
                "id": len(self.annotations) + 1, "image_id": image_id, "category_id": object_id,
                "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
                "area": int(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0, "track_id": object_id, "attributes": {"occluded": False},
            })
            self.ids.add(object_id)

    def check(self) -> None:
        """A :class:`UsageError` if the labels name ids that no frame holds."""
        check_labels(self.labels, self.ids, "the masks")

    def as_dict(self) -> dict:
        """The COCO instances dict (checked first)."""
        self.check()
        categories = [{"id": i, "name": category_name(i, self.labels), "supercategory": ""} for i in sorted(self.ids)]
        return {
            "info": {"description": "dinotrack masks", "contributor": "", "url": "", "version": "", "year": "", "date_created": ""},
            "licenses": [{"id": 0, "name": "", "url": ""}],
            "categories": categories,
            "images": self.images,
            "annotations": self.annotations,
        }

    def write(self, path: str | os.PathLike) -> None:
        """Write the file whole or not at all."""
        atomic_write_text(path, json.dumps(self.as_dict(), separators=(",", ":")))


def check_labels(labels: Mapping[int, str], present: set[int] | list[int], where: str) -> None:
    """A :class:`UsageError` if ``labels`` name object ids absent from ``where`` (which holds ``present``)."""
    missing = sorted(set(labels) - set(present))
    if missing:
        raise UsageError(
            f"--labels names object id(s) {', '.join(map(str, missing))}, which {where} lack "
            f"(they hold {', '.join(map(str, sorted(present))) or 'no object'}). "
            "Remove those entries from the labels file, or give the mask that holds them."
        )


def read_labels(path: str | os.PathLike) -> dict[int, str]:
    """``{id: name}`` from a JSON object such as ``{"1": "person", "2": "dog"}`` (ids 1..254, names non-empty)."""
    data = _load_json(Path(path), "--labels")
    if not isinstance(data, dict):
        raise UsageError(f"--labels {path} is not a JSON object. Write it as {{\"1\": \"person\", \"2\": \"dog\"}}.")
    labels = {}
    for key, name in data.items():
        if not (str(key).isdigit() and 1 <= int(key) <= MAX_ID) or not isinstance(name, str) or not name.strip():
            raise UsageError(
                f"--labels {path} maps {key!r} to {name!r}; each key must be an object id 1..{MAX_ID} and each value "
                "a non-empty name, as in {\"1\": \"person\", \"2\": \"dog\"}."
            )
        labels[int(key)] = name
    return labels


@dataclass(frozen=True)
class CocoImage:
    """One ``images`` entry: its place in the list, id, file name and ``(H, W)`` size."""

    position: int
    id: int
    file_name: str
    size: tuple[int, int]

    @property
    def stem(self) -> str:
        """The file name's stem (the frame it belongs to), folders and extension dropped."""
        return PurePosixPath(self.file_name.replace("\\", "/")).stem

    @property
    def where(self) -> str:
        return f"images[{self.position}] (id {self.id}, file_name {self.file_name!r})"


@dataclass
class CocoInstances:
    """A checked COCO instances file: its images in file order and each image's annotations (not decoded)."""

    path: Path
    images: list[CocoImage]
    annotations: dict[int, list[tuple[int, dict]]] = field(default_factory=dict)
    """Per image id: ``(position in the annotations list, annotation)``."""

    def object_ids(self, image: CocoImage) -> set[int]:
        """The object ids the image's annotations name (without decoding them)."""
        return {_object_id(annotation) for _, annotation in self.annotations.get(image.id, [])}

    def label_map(self, image: CocoImage) -> np.ndarray:
        """The image's objects as a ``[H, W] uint8`` label map (zeros without annotations).

        A :class:`UsageError` if two objects claim the same pixel.
        """
        ids = np.zeros(image.size, dtype=np.uint8)
        for position, annotation in self.annotations.get(image.id, []):
            object_id = _object_id(annotation)
            claimed = self._decode(position, annotation, image).astype(bool)
            taken = claimed & (ids != 0) & (ids != object_id)
            if taken.any():
                self._overlap(image, object_id, ids, taken)
            ids[claimed] = object_id
        return ids

    def _decode(self, position: int, annotation: dict, image: CocoImage) -> np.ndarray:
        """The annotation's ``[H, W] uint8`` 0/1 mask. A compressed RLE whose runs do not cover the image
        exactly (pycocotools leaves the rest of the mask undefined) is refused: it must encode back to itself."""
        segmentation = annotation["segmentation"]
        problem = None
        try:
            rle = _rle(segmentation, image.size)
            mask = mask_utils.decode(rle)
        except (ValueError, TypeError) as error:
            problem = str(error)
        else:
            compressed = isinstance(segmentation, dict) and isinstance(segmentation["counts"], str)
            if mask.max(initial=0) > 1 or (compressed and mask_utils.encode(mask)["counts"] != rle["counts"]):
                problem = f"its runs do not cover the {image.size[1]}x{image.size[0]} pixels exactly"
        if problem is None:
            return mask
        raise UsageError(
            f"COCO file {self.path}: annotations[{position}] (on {image.where}) does not decode ({problem}). "
            "Export the annotations again from the label editor."
        )

    def _overlap(self, image: CocoImage, object_id: int, ids: np.ndarray, taken: np.ndarray) -> None:
        others = sorted({int(v) for v in np.unique(ids[taken])})
        y, x = (int(v[0]) for v in np.nonzero(taken))
        raise UsageError(
            f"COCO file {self.path}: on frame {image.stem!r} ({image.where}), objects {', '.join(map(str, others))} and "
            f"{object_id} claim the same {int(taken.sum())} pixel(s), the first at x={x}, y={y}. A label map gives each "
            "pixel one object: fix the overlap in the label editor (or give the objects in front the pixels), then export again."
        )


def _object_id(annotation: dict) -> int:
    return annotation["track_id"] if "track_id" in annotation else annotation["category_id"]


def _rle(segmentation: dict | list, size: tuple[int, int]) -> dict:
    """pycocotools' compressed RLE of a checked segmentation (polygons, uncompressed or compressed RLE)."""
    height, width = size
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": [height, width], "counts": segmentation["counts"].encode("ascii")}


def read_coco(path: str | os.PathLike) -> CocoInstances:
    """Load and check a COCO instances file (see the module docstring); a :class:`UsageError` says what is wrong and where."""
    path = Path(path)
    data = _load_json(path, "COCO file")
    problem = _shape_problem(data)
    if problem:
        raise _coco_error(path, problem)
    images = _read_images(path, data["images"])
    by_id = {image.id: image for image in images}
    coco = CocoInstances(path, images)
    for position, annotation in enumerate(data["annotations"]):
        image = _annotation_image(path, position, annotation, by_id)
        problem = _annotation_problem(annotation, image.size)
        if problem:
            raise _coco_error(path, f"annotations[{position}] (on {image.where}) {problem}")
        on_image = coco.annotations.setdefault(image.id, [])
        if len(on_image) == MAX_ANNOTATIONS_PER_IMAGE:
            raise _coco_error(
                path, f"annotations[{position}] is one annotation too many on {image.where}: at most "
                f"{MAX_ANNOTATIONS_PER_IMAGE} (MAX_ANNOTATIONS_PER_IMAGE) are read per image, each decoded at the image's size"
            )
        on_image.append((position, annotation))
    return coco


def _coco_error(path: Path, problem: str) -> UsageError:
    return UsageError(
        f"COCO file {printable(path)}: {problem}. Give a COCO instances file (as CVAT's \"COCO 1.0\" export writes), "
        "with images and annotations whose segmentation is RLE or polygons."
    )


def _load_json(path: Path, what: str) -> object:
    """The parsed JSON of ``path``, checked first to be a regular file of at most MAX_COCO_BYTES."""
    problem = path_problem(path) or ("is a folder" if path.is_dir() else None)
    if problem:
        raise UsageError(f"{what} {printable(path)} {problem}. Give the path of a JSON file.")
    size = path.stat().st_size
    if size > MAX_COCO_BYTES:
        raise UsageError(
            f"{what} {printable(path)} is {size / 2**20:.0f} MiB, over dinotrack's limit of {MAX_COCO_BYTES // 2**20} MiB "
            "(MAX_COCO_BYTES); it was not read. Split the annotations into smaller files."
        )
    try:
        return json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{what} {printable(path)} is not valid JSON ({error}). Export it again, or fix it there.") from None
    except RecursionError:
        raise UsageError(f"{what} {printable(path)} nests its JSON too deeply to be read. Export it again.") from None


def _shape_problem(data: object) -> str | None:
    if not isinstance(data, dict):
        return "the file is not a JSON object with images and annotations"
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            return f"it has no {key!r} list"
    return None


def _read_images(path: Path, entries: list) -> list[CocoImage]:
    images: list[CocoImage] = []
    ids: set[int] = set()
    stems: dict[str, CocoImage] = {}
    for position, entry in enumerate(entries):
        image = _image(path, position, entry)
        if image.id in ids:
            raise _coco_error(path, f"{image.where} repeats an image id")
        twin = stems.get(folded(image.stem))
        if twin is not None:
            raise _coco_error(
                path, f"{image.where} and {twin.where} name the same frame once case is folded "
                "(their masks would overwrite each other, and on Windows or macOS so would their files)"
            )
        ids.add(image.id)
        stems[folded(image.stem)] = image
        images.append(image)
    return images


def _image(path: Path, position: int, entry: object) -> CocoImage:
    where = f"images[{position}]"
    if not isinstance(entry, dict):
        raise _coco_error(path, f"{where} is not an object")
    fields = {key: entry.get(key) for key in ("id", "width", "height")}
    if not all(_is_int(value) for value in fields.values()) or not (entry["width"] > 0 and entry["height"] > 0):
        raise _coco_error(path, f"{where} needs an integer id and a positive integer width and height (got {fields})")
    name = entry.get("file_name")
    problem = _file_name_problem(name)
    if problem:
        raise _coco_error(path, f"{where} (id {entry['id']}) has the file_name {name!r}, which {problem}")
    size = too_many_pixels((entry["width"], entry["height"]))
    if size:
        raise _coco_error(path, f"{where} (id {entry['id']}) is {size}")
    return CocoImage(position, entry["id"], name, (entry["height"], entry["width"]))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _file_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a frame's mask inside the output folder; ``None`` if it can."""
    if not isinstance(name, str) or not name:
        return "is not a file name"
    if "\0" in name:
        return "holds a NUL byte"
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "is an absolute path (names must stay inside their folder)"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "climbs out of its folder with '..'"
    if PurePosixPath(parts[-1]).stem in ("", "."):
        return "has no file stem to name the frame"
    return None


def _annotation_image(path: Path, position: int, annotation: object, by_id: dict[int, CocoImage]) -> CocoImage:
    if not isinstance(annotation, dict):
        raise _coco_error(path, f"annotations[{position}] is not an object")
    image = by_id.get(annotation.get("image_id")) if _is_int(annotation.get("image_id")) else None
    if image is None:
        raise _coco_error(path, f"annotations[{position}] refers to image_id {annotation.get('image_id')!r}, which 'images' does not list")
    return image


def _annotation_problem(annotation: dict, size: tuple[int, int]) -> str | None:
    """Why an annotation cannot be decoded on an image of ``size`` ``(H, W)``, checked without decoding."""
    key = "track_id" if "track_id" in annotation else "category_id"
    object_id = annotation.get(key)
    if not (_is_int(object_id) and 1 <= object_id <= MAX_ID):
        return f"has the {key} {object_id!r}; object ids must be 1..{MAX_ID}, so that they fit a label map"
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list):
        return _polygons_problem(segmentation, size)
    if isinstance(segmentation, dict):
        return _rle_problem(segmentation, size)
    return "has no segmentation (RLE or polygons)"


def _rle_problem(rle: dict, size: tuple[int, int]) -> str | None:
    height, width = size
    pixels = height * width
    if rle.get("size") != [height, width]:
        return f"has an RLE of size {rle.get('size')!r}, but its image is [{height}, {width}] (height, width)"
    counts = rle.get("counts")
    if isinstance(counts, str):
        if len(counts) > pixels + _RLE_SLACK:
            return (
                f"has a counts string of {len(counts):,} characters, over the limit for a {width}x{height} image "
                f"(H*W + {_RLE_SLACK} = {pixels + _RLE_SLACK:,}); it was not decoded"
            )
        if not counts.isascii():
            return "has a counts string with characters that compressed RLE never uses"
        return None
    if not isinstance(counts, list):
        return "has RLE counts that are neither a string nor a list"
    if len(counts) > pixels + 1:
        return f"has {len(counts):,} RLE runs, over the limit for a {width}x{height} image (H*W + 1 = {pixels + 1:,}); it was not decoded"
    if not all(_is_int(run) and run >= 0 for run in counts) or sum(counts) != pixels:
        return f"has RLE counts that are not whole numbers of pixels adding up to H*W = {pixels:,}"
    return None


def _polygons_problem(polygons: list, size: tuple[int, int]) -> str | None:
    height, width = size
    pixels = height * width
    if not polygons or not all(isinstance(polygon, list) for polygon in polygons):
        return "has a segmentation list that is not a list of polygons [[x1, y1, x2, y2, ...], ...]"
    vertices = sum(len(polygon) for polygon in polygons) // 2
    if vertices > pixels:
        return (
            f"has polygons of {vertices:,} vertices, over the limit for a {width}x{height} image "
            f"(H*W = {pixels:,} vertices); they were not drawn"
        )
    outline = 0.0
    for polygon in polygons:
        if len(polygon) < 6 or len(polygon) % 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon):
            return "has a polygon that is not at least three (x, y) points of numbers"
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(points).all():
            return "has a polygon with a coordinate that is not a finite number"
        steps = np.abs(np.diff(np.vstack([points, points[:1]]), axis=0)).max(axis=1)
        outline += float(steps.sum())
    if outline > pixels:
        return (
            f"has polygon outlines {outline:,.0f} pixels long, over the limit for a {width}x{height} image "
            f"(H*W = {pixels:,} pixels); they were not drawn"
        )
    return None


def frame_of(stem: str, frames: Mapping[str, int], *, video: bool) -> int | None:
    """The frame index named ``stem``: a frame's own name, or for a video CVAT's ``frame_000012``."""
    if stem in frames:
        return frames[stem]
    match = _CVAT_FRAME.fullmatch(stem) if video else None
    return frames.get(f"{int(match.group(1)):05d}") if match else None


def keyframe_loaders(
    coco: CocoInstances, frames: Mapping[str, int], frame_size: tuple[int, int], *, video: bool
) -> dict[int, Callable[[], np.ndarray]]:
    """Per frame index, a loader of the ``[H, W] uint8`` keyframe that ``coco`` gives it.

    ``frames`` maps frame names to indices. Every image must name a frame of
    its own and have the frames' ``(H, W)`` size. Only images with
    annotations are keyframes: editors list every frame of a task, annotated
    or not. Every keyframe is decoded once now (then dropped), so that
    overlaps are found before any output exists.
    """
    loaders: dict[int, Callable[[], np.ndarray]] = {}
    named: dict[int, CocoImage] = {}
    for image in coco.images:
        index = frame_of(image.stem, frames, video=video)
        if index is None:
            raise UsageError(
                f"COCO file {coco.path}: {image.where} names no frame of the video (frames are named like "
                f"{', '.join(list(frames)[:3])}, ...). Give the annotations of this video, with file names whose stems are the frames' names."
            )
        if index in named:
            raise UsageError(
                f"COCO file {coco.path}: {image.where} and {named[index].where} name the same frame. "
                "Give each frame's annotations once."
            )
        if image.size != frame_size:
            raise UsageError(
                f"COCO file {coco.path}: {image.where} is {image.size[1]}x{image.size[0]}, but the frames are "
                f"{frame_size[1]}x{frame_size[0]}. Export the annotations of frames at their original size."
            )
        named[index] = image
        if coco.annotations.get(image.id):
            coco.label_map(image)
            loaders[index] = lambda image=image: coco.label_map(image)
    return loaders


def convert(source: Path, destination: Path, *, labels: Mapping[int, str] | None = None, overwrite: bool = False) -> int:
    """A folder of palette PNGs to a COCO file, or a COCO file to a new folder of palette PNGs; returns the frames written.

    ``destination`` is replaced only with ``overwrite`` (a folder only if it
    holds nothing but PNG files).
    """
    source, destination = Path(source), Path(destination)
    problem = path_problem(source)
    if problem:
        raise UsageError(f"{printable(source)} {problem}. Give a folder of PNG masks or a COCO .json file.")
    to_coco = source.is_dir()
    if not to_coco and source.suffix.lower() != ".json":
        raise UsageError(f"{source} is neither a folder of PNG masks nor a COCO .json file. Give one of them to convert.")
    if to_coco and destination.suffix.lower() != ".json":
        raise UsageError(f"Converting the masks of {source} writes a COCO file: name it with .json (got {destination}).")
    if labels and not to_coco:
        raise UsageError("--labels names the categories of a COCO file written; converting COCO to PNG masks takes none.")
    _check_destination(destination, overwrite=overwrite, folder=not to_coco)
    try:
        return masks_to_coco(source, destination, labels) if to_coco else coco_to_masks(source, destination)
    except OSError as error:
        raise DinotrackError(
            f"Writing {destination} failed: {error.strerror or error}. Nothing was written there; free some space "
            "or choose a folder you can write to, then convert again."
        ) from None


def _check_destination(destination: Path, *, overwrite: bool, folder: bool) -> None:
    if not (destination.exists() or destination.is_symlink()):
        return
    if not overwrite:
        raise UsageError(f"{destination} already exists. Choose a new name, or pass --overwrite to replace it.")
    if destination.is_symlink() or folder != destination.is_dir():
        raise UsageError(f"{destination} exists and is not a {'folder' if folder else 'file'}; it is not replaced. Choose a new name.")
    if folder and any(entry.suffix.lower() != ".png" or not entry.is_file() for entry in destination.iterdir()):
        raise UsageError(f"{destination} holds files other than PNG masks; it is not replaced. Choose a new folder.")


def masks_to_coco(folder: Path, destination: Path, labels: Mapping[int, str] | None = None) -> int:
    """Write the palette PNGs of ``folder`` (name order) as one COCO file; returns the images written."""
    files = sorted(folder.glob("*.png"))
    if not files:
        raise UsageError(f"{folder} holds no PNG masks. Give a folder of palette PNG label maps (such as a run's masks/).")
    writer = CocoWriter(labels)
    for file in files:
        writer.add(f"{file.stem}.png", read_label_map(file))
    writer.check()
    destination.parent.mkdir(parents=True, exist_ok=True)
    writer.write(destination)
    return len(files)


def coco_to_masks(source: Path, folder: Path) -> int:
    """Write one palette PNG per image of the COCO file ``source`` into ``folder`` (replaced if it exists).

    The folder appears whole or not at all: the PNGs go to a hidden folder
    beside it, renamed at the end. Returns the masks written.
    """
    coco = read_coco(source)
    temporary = partial_path(folder)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        for image, ids in _label_maps(coco):
            write_label_map(temporary / f"{image.stem}.png", ids)
        if folder.is_dir():
            shutil.rmtree(folder)
        os.rename(temporary, folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return len(coco.images)


def _label_maps(coco: CocoInstances) -> Iterator[tuple[CocoImage, np.ndarray]]:
    for image in coco.images:
        yield image, coco.label_map(image)
