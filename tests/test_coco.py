"""COCO in and out: exact round trips, files pycocotools loads, ``--export coco``, ``--mask FILE.json``,
``dinotrack convert``, and every bad or hostile COCO input refused in one paragraph."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from conftest import SAMPLE
from dinotrack.coco import COCO_FILE, CocoWriter, read_coco
from dinotrack.masks import read_label_map, write_label_map
from dinotrack.pipeline import RunOptions, track_video
from test_errors import (  # noqa: F401 - ws is a fixture
    FRAME_SIZE,
    Workspace,
    assert_nothing_written,
    assert_reported,
    invoke,
    two_objects,
    ws,
)
from test_interrupt import stop_after

VIDEO, MASK = SAMPLE / "shapes.mp4", SAMPLE / "shapes_mask.png"
TINY = ["--model", "tiny", "--device", "cpu", "--short-side", "64"]


def gapped_maps() -> list[np.ndarray]:
    """Four ``[48, 64] uint8`` label maps: ids 1, 7 and 200 (gaps), touching objects, and an empty frame."""
    maps = []
    for shift in range(4):
        ids = np.zeros(FRAME_SIZE, dtype=np.uint8)
        ids[2 + shift : 20, 3:30] = 1
        ids[20:40, 10 + shift : 50] = 7  # touches object 1
        ids[44:, 60:] = 200
        maps.append(ids)
    maps[2][:] = 0
    return maps


def write_masks(folder: Path, maps: list[np.ndarray]) -> None:
    folder.mkdir(parents=True)
    for index, ids in enumerate(maps):
        write_label_map(folder / f"{index:05d}.png", ids)


def masks_in(folder: Path) -> dict[str, np.ndarray]:
    return {file.stem: read_label_map(file) for file in sorted(folder.glob("*.png"))}


def coco_file(path: Path, images: list[dict], annotations: list[dict], **extra: object) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [], **extra}))
    return path


def image(image_id: int, name: str, size: tuple[int, int] = FRAME_SIZE) -> dict:
    return {"id": image_id, "file_name": name, "height": size[0], "width": size[1]}


def rle_annotation(image_id: int, ids: np.ndarray, object_id: int, **fields: object) -> dict:
    rle = mask_utils.encode(np.asfortranarray(ids == object_id, dtype=np.uint8))
    return {"image_id": image_id, "category_id": object_id, "segmentation": {"size": list(ids.shape), "counts": rle["counts"].decode()}, **fields}


# --- writing and reading ---------------------------------------------------------------------------------------------


def test_written_file_loads_in_pycocotools_with_every_field(tmp_path: Path):
    maps = gapped_maps()
    writer = CocoWriter({7: "dog"})
    for index, ids in enumerate(maps):
        writer.add(f"{index:05d}.jpg", ids)
    writer.write(tmp_path / COCO_FILE)
    coco = COCO(str(tmp_path / COCO_FILE))
    data = json.loads((tmp_path / COCO_FILE).read_text())
    assert {"info", "licenses", "images", "annotations", "categories"} <= set(data)
    assert [image["id"] for image in data["images"]] == [1, 2, 3, 4]
    assert data["images"][0] == {"id": 1, "file_name": "00000.jpg", "width": 64, "height": 48, "license": 0}
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(1, "object_1"), (7, "dog"), (200, "object_200")]
    assert [a["id"] for a in data["annotations"]] == list(range(1, 10))  # three objects on three frames, none on the empty one
    assert not coco.getAnnIds(imgIds=[3])
    for annotation in coco.loadAnns(coco.getAnnIds()):
        ids = maps[annotation["image_id"] - 1]
        expected = ids == annotation["category_id"]
        assert annotation["iscrowd"] == 0 and annotation["track_id"] == annotation["category_id"]
        assert isinstance(annotation["segmentation"]["counts"], str)
        assert np.array_equal(coco.annToMask(annotation).astype(bool), expected)
        assert annotation["area"] == expected.sum()
        rows, columns = np.nonzero(expected)
        assert annotation["bbox"] == [columns.min(), rows.min(), np.ptp(columns) + 1, np.ptp(rows) + 1]


def test_read_gives_back_the_label_maps(tmp_path: Path):
    maps = gapped_maps()
    writer = CocoWriter()
    for index, ids in enumerate(maps):
        writer.add(f"{index:05d}.png", ids)
    writer.write(tmp_path / "a.json")
    coco = read_coco(tmp_path / "a.json")
    assert [image.stem for image in coco.images] == ["00000", "00001", "00002", "00003"]
    for image, ids in zip(coco.images, maps):
        assert np.array_equal(coco.label_map(image), ids)


def uncompressed(mask: np.ndarray) -> list[int]:
    """Run lengths of a 0/1 mask in column-major order, starting with background (COCO's uncompressed RLE)."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def test_polygons_uncompressed_rle_and_track_ids_are_read(tmp_path: Path):
    square = np.zeros(FRAME_SIZE, dtype=bool)
    square[30:40, 40:60] = True
    annotations = [
        {"image_id": 1, "category_id": 9, "segmentation": [[2, 2, 20, 2, 20, 12, 2, 12]]},
        {"image_id": 1, "category_id": 9, "track_id": 4, "segmentation": {"size": list(FRAME_SIZE), "counts": uncompressed(square)}},
    ]
    coco = read_coco(coco_file(tmp_path / "a.json", [image(1, "x/00000.jpg")], annotations))
    ids = coco.label_map(coco.images[0])
    assert np.array_equal(ids == 4, square)
    assert ids[5, 10] == 9 and ids[0, 0] == 0 and ids[5, 30] == 0
    assert set(np.unique(ids)) == {0, 4, 9}


# --- the CLI ---------------------------------------------------------------------------------------------------------


def test_convert_round_trips_exactly(tmp_path: Path):
    maps = gapped_maps()
    write_masks(tmp_path / "masks", maps)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"1": "person", "200": "ball"}))
    result = invoke(["convert", tmp_path / "masks", tmp_path / "new" / "a.json", "--labels", labels])
    assert result[0] == 0, result[1]
    names = {c["id"]: c["name"] for c in COCO(str(tmp_path / "new" / "a.json")).loadCats([1, 7, 200])}
    assert names == {1: "person", 7: "object_7", 200: "ball"}
    (tmp_path / "new" / "a.json").rename(tmp_path / "a.json")
    assert invoke(["convert", tmp_path / "a.json", tmp_path / "back"])[0] == 0
    back = masks_in(tmp_path / "back")
    assert sorted(back) == ["00000", "00001", "00002", "00003"]
    for index, ids in enumerate(maps):
        assert np.array_equal(back[f"{index:05d}"], ids)
    again = invoke(["convert", tmp_path / "a.json", tmp_path / "back"])
    assert_reported(*again, 2, ("already exists", "--overwrite"))
    assert invoke(["convert", tmp_path / "a.json", tmp_path / "back", "--overwrite"])[0] == 0
    assert not list(tmp_path.glob(".*.part"))


def test_images_without_annotations_become_empty_masks_at_their_size(tmp_path: Path):
    source = coco_file(tmp_path / "a.json", [image(1, "a.jpg", (5, 7)), image(2, "b.jpg", (9, 4))], [])
    assert invoke(["convert", source, tmp_path / "masks"])[0] == 0
    masks = masks_in(tmp_path / "masks")
    assert masks["a"].shape == (5, 7) and masks["b"].shape == (9, 4)
    assert not masks["a"].any() and not masks["b"].any()


def track(output: Path, tiny_weights: Path, mask: Path, *extra: object) -> tuple[int, str]:
    return invoke(["track", VIDEO, "--mask", mask, "--output", output, "--weights", tiny_weights, *TINY, "--no-overlay", *extra])


def assert_coco_matches_masks(output: Path, frames: int) -> None:
    coco = COCO(str(output / COCO_FILE))
    masks = masks_in(output / "masks")
    assert len(masks) == frames and len(coco.imgs) == frames
    for image_id, entry in coco.imgs.items():
        ids = np.zeros((entry["height"], entry["width"]), dtype=np.uint8)
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            ids[coco.annToMask(annotation).astype(bool)] = annotation["track_id"]
        assert np.array_equal(ids, masks[Path(entry["file_name"]).stem])


def test_track_exports_coco_of_every_frame(tiny_weights: Path, tmp_path: Path):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"1": "circle"}))
    status, output = track(tmp_path / "run", tiny_weights, MASK, "--export", "coco", "--labels", labels)
    assert status == 0, output
    assert_coco_matches_masks(tmp_path / "run", 60)
    data = json.loads((tmp_path / "run" / COCO_FILE).read_text())
    assert data["images"][0]["file_name"] == "00000.png"
    assert data["categories"][0] == {"id": 1, "name": "circle", "supercategory": ""}
    assert "export_coco" in json.loads((tmp_path / "run" / "run.json").read_text())["seconds"]
    refused = track(tmp_path / "run", tiny_weights, MASK, "--export", "coco")
    assert_reported(*refused, 2, ("already holds results", COCO_FILE))


def test_coco_keyframe_gives_the_masks_of_the_same_png_keyframe(tiny_weights: Path, tmp_path: Path):
    first = read_label_map(MASK)
    annotations = [rle_annotation(1, first, i, id=n + 1) for n, i in enumerate(np.unique(first)[1:].tolist())]
    frames = [image(n + 1, f"frame_{n:06d}.PNG", first.shape) for n in range(60)]  # CVAT names a video's frames so and lists them all
    keyframe = coco_file(tmp_path / "key.json", frames, annotations)
    assert track(tmp_path / "png", tiny_weights, MASK)[0] == 0
    status, output = track(tmp_path / "coco", tiny_weights, keyframe)
    assert status == 0, output
    png, coco = masks_in(tmp_path / "png" / "masks"), masks_in(tmp_path / "coco" / "masks")
    assert sorted(png) == sorted(coco)
    assert all(np.array_equal(png[stem], coco[stem]) for stem in png)


def test_a_video_frame_named_twice_is_refused(tiny_weights: Path, tmp_path: Path):
    first = read_label_map(MASK)
    images = [image(1, "00000.png", first.shape), image(2, "frame_000000.PNG", first.shape)]
    keyframe = coco_file(tmp_path / "key.json", images, [rle_annotation(1, first, 1)])
    assert_reported(*track(tmp_path / "run", tiny_weights, keyframe), 2, ("images[1]", "images[0]", "name the same frame"))
    assert_nothing_written(tmp_path / "run")


def test_resumed_run_exports_every_frame(tiny_weights: Path, tmp_path: Path):
    options = RunOptions(model="tiny", weights=tiny_weights, device="cpu", short_side=64, overlay="none", export=("coco",))
    stop, on_progress = stop_after(20)
    report = track_video(VIDEO, MASK, tmp_path / "run", options, stop=stop, on_progress=on_progress)
    assert report.status == "interrupted" and not (tmp_path / "run" / COCO_FILE).exists()
    assert track_video(VIDEO, MASK, tmp_path / "run", options, resume=True).status == "complete"
    assert_coco_matches_masks(tmp_path / "run", 60)


def test_complete_run_gets_its_export_from_the_masks_on_disk(tiny_weights: Path, tmp_path: Path):
    assert track(tmp_path / "run", tiny_weights, MASK)[0] == 0
    status, output = track(tmp_path / "run", tiny_weights, MASK, "--resume", "--export", "coco")
    assert status == 0, output
    assert_coco_matches_masks(tmp_path / "run", 60)


def test_batch_takes_a_coco_mask_and_exports_coco_even_for_a_complete_run(tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # the in-process engine
    first = read_label_map(MASK)
    coco_file(tmp_path / "key.json", [image(1, "00000.png", first.shape)], [rle_annotation(1, first, 1)])
    (tmp_path / "jobs.jsonl").write_text(json.dumps({"source": str(VIDEO), "mask": "key.json", "name": "shapes"}) + "\n")
    (tmp_path / "labels.json").write_text(json.dumps({"1": "circle"}))
    args = ["batch", tmp_path / "jobs.jsonl", "--output", tmp_path / "batch", "--model", "dinotrack.testing:TINY",
            "--weights", tiny_weights, "--device", "cpu", "--short-side", "64", "--no-overlay"]
    assert invoke(args)[0] == 0
    assert not (tmp_path / "batch" / "shapes" / COCO_FILE).exists()
    status, output = invoke([*args, "--export", "coco", "--labels", tmp_path / "labels.json"])  # the complete run gets its export
    assert status == 0, output
    assert_coco_matches_masks(tmp_path / "batch" / "shapes", 60)
    assert COCO(str(tmp_path / "batch" / "shapes" / COCO_FILE)).loadCats([1])[0]["name"] == "circle"


# --- bad and hostile input -------------------------------------------------------------------------------------------


def keyframe_json(ws: Workspace, images: list[dict], annotations: list[dict], name: str = "key.json") -> Path:
    return coco_file(ws.root / name, images, annotations)


def good_annotations() -> list[dict]:
    ids = two_objects()
    return [rle_annotation(1, ids, 1), rle_annotation(1, ids, 2)]


def malformed(ws: Workspace) -> list[object]:
    (ws.root / "key.json").write_text('{"images": [{"id": 1,}')
    return ws.track(mask=ws.root / "key.json")


def unknown_image_id(ws: Workspace) -> list[object]:
    annotations = [{**good_annotations()[0], "image_id": 5}]
    return ws.track(mask=keyframe_json(ws, [image(1, "00000.png")], annotations))


def no_such_frame(ws: Workspace) -> list[object]:
    return ws.track(mask=keyframe_json(ws, [image(1, "00000.png"), image(2, "elsewhere.png")], good_annotations()))


def other_size(ws: Workspace) -> list[object]:
    ids = np.zeros((24, 32), dtype=np.uint8)
    ids[:5, :5] = 1
    return ws.track(mask=keyframe_json(ws, [image(1, "00000.png", (24, 32))], [rle_annotation(1, ids, 1)]))


def overlapping(ws: Workspace) -> list[object]:
    other = np.zeros(FRAME_SIZE, dtype=np.uint8)
    other[20:30, 20:40] = 3  # crosses objects 1 and 2
    annotations = [*good_annotations(), rle_annotation(2, two_objects(), 1), rle_annotation(2, two_objects(), 2), rle_annotation(2, other, 3)]
    return ws.track(mask=keyframe_json(ws, [image(1, "00000.png"), image(2, "00001.png")], annotations))


def labels_of_absent_ids(ws: Workspace) -> list[object]:
    (ws.root / "labels.json").write_text(json.dumps({"1": "a", "5": "e", "9": "i"}))
    return ws.track("--export", "coco", "--labels", ws.root / "labels.json")


def huge_counts(ws: Workspace) -> list[object]:
    annotation = {"image_id": 1, "category_id": 1, "segmentation": {"size": list(FRAME_SIZE), "counts": "0" * 100_000}}
    return ws.track(mask=keyframe_json(ws, [image(1, "00000.png")], [annotation]))


def million_point_polygon(ws: Workspace) -> list[object]:
    points = "[" + ",".join(["1,1,47,47"] * 500_000) + "]"
    (ws.root / "key.json").write_text(
        '{"images": [{"id": 1, "file_name": "00000.png", "width": 64, "height": 48}], '
        f'"annotations": [{{"image_id": 1, "category_id": 1, "segmentation": [{points}]}}]}}'
    )
    return ws.track(mask=ws.root / "key.json")


def long_outline(ws: Workspace) -> list[object]:
    zigzag = [0, 0, 63, 47] * 300  # 600 vertices, under the 3072 allowed, but each edge crosses the image
    return ws.track(mask=keyframe_json(ws, [image(1, "00000.png")], [{"image_id": 1, "category_id": 1, "segmentation": [zigzag]}]))


def short_counts(ws: Workspace) -> list[object]:
    annotation = {"image_id": 1, "category_id": 1, "segmentation": {"size": list(FRAME_SIZE), "counts": "0" * 40}}
    return ws.track(mask=keyframe_json(ws, [image(1, "00000.png")], [annotation]))


def convert_named(name: str) -> object:
    def args(ws: Workspace) -> list[object]:
        source = keyframe_json(ws, [image(1, "00000.png"), image(2, name)], [])
        return ["convert", source, ws.output]

    return args


def convert_colliding(ws: Workspace) -> list[object]:
    source = keyframe_json(ws, [image(1, "a/Frame.jpg"), image(2, "b/frame.PNG")], [])
    return ["convert", source, ws.output]


def convert_png_folder_to_a_folder(ws: Workspace) -> list[object]:
    return ["convert", ws.frames, ws.output]


def labels_file(ws: Workspace, text: str) -> Path:
    (ws.root / "labels.json").write_text(text)
    return ws.root / "labels.json"


def convert_labels_of_absent_ids(ws: Workspace) -> list[object]:
    (ws.root / "masks").mkdir()
    write_label_map(ws.root / "masks" / "00000.png", two_objects())
    return ["convert", ws.root / "masks", ws.output / "a.json", "--labels", labels_file(ws, '{"3": "cat"}')]


CASES = {
    "malformed-json": (malformed, ("key.json", "not valid JSON", "line 1")),
    "unknown-image-id": (unknown_image_id, ("annotations[0]", "image_id 5", "does not list")),
    "two-images-of-a-frame": (lambda ws: ws.track(mask=keyframe_json(ws, [image(1, "00000.png"), image(2, "x/00000.jpg")], good_annotations())),
                              ("images[1]", "images[0]", "name the same frame once case is folded")),
    "file-name-of-no-frame": (no_such_frame, ("images[1]", "elsewhere.png", "names no frame")),
    "size-unlike-the-frames": (other_size, ("32x24", "64x48", "original size")),
    "two-objects-on-a-pixel": (overlapping, ("frame '00001'", "objects 1, 2 and 3", "same 96 pixel(s)")),
    "labels-of-absent-ids": (labels_of_absent_ids, ("--labels", "5, 9", "lack", "they hold 1, 2")),
    "labels-not-ids": (lambda ws: ws.track("--export", "coco", "--labels", labels_file(ws, '{"person": 1}')),
                       ("labels.json", "maps 'person' to 1", "object id 1..254")),
    "labels-without-export": (lambda ws: ws.track("--labels", labels_file(ws, '{"1": "a"}')), ("--labels", "--export coco")),
    "convert-labels-of-absent-ids": (convert_labels_of_absent_ids, ("--labels", "id(s) 3", "the masks lack")),
    "huge-counts": (huge_counts, ("annotations[0]", "100,000 characters", "H*W + 16 = 3,088", "not decoded")),
    "million-point-polygon": (million_point_polygon, ("1,000,000 vertices", "H*W = 3,072", "not drawn")),
    "long-outline": (long_outline, ("outlines", "pixels long", "H*W = 3,072", "not drawn")),
    "too-many-annotations": (lambda ws: ws.track(mask=keyframe_json(ws, [image(1, "00000.png")], good_annotations() * 513)),
                             ("annotations[1024]", "one annotation too many", "at most 1024")),
    "runs-short-of-the-image": (short_counts, ("does not decode", "do not cover the 64x48 pixels")),
    "convert-parent": (convert_named("../../etc/x.png"), ("images[1]", "climbs out of its folder")),
    "convert-absolute": (convert_named("/etc/passwd"), ("images[1]", "absolute path")),
    "convert-windows-absolute": (convert_named("C:\\frames\\x.png"), ("images[1]", "absolute path")),
    "convert-nul": (convert_named("a\0.png"), ("images[1]", "NUL byte")),
    "convert-case-collision": (convert_colliding, ("images[1]", "images[0]", "same frame once case is folded")),
    "convert-needs-json-name": (convert_png_folder_to_a_folder, ("writes a COCO file", ".json")),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_coco_input_is_refused_before_anything_is_written(ws: Workspace, name: str) -> None:
    make_args, words = CASES[name]
    assert_reported(*invoke(make_args(ws)), 2, words)
    assert_nothing_written(ws.output)
    assert not list(ws.root.glob(".*.part"))
