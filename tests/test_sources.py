"""Frame sources (folders, videos), prefetching and the mp4 writer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dinotrack import sources
from dinotrack.sources import VideoWriter, h264_available, open_source, prefetch
from dinotrack.structs import DinotrackError, UsageError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_videos" / "shapes.mp4"
DATA = REPO.parent / "shared" / "data"


def write_image(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def solid(value: int, size: tuple[int, int] = (12, 20)) -> np.ndarray:
    """``[H, W, 3] uint8`` with a distinct colour per ``value``."""
    rgb = np.empty((*size, 3), dtype=np.uint8)
    rgb[...] = (value, 255 - value, (3 * value) % 256)
    return rgb


def decoded_frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def write_video(path: Path, count: int, *, fps: float = 24.0, size=(32, 48), **options) -> VideoWriter:
    with VideoWriter(path, fps, size, **options) as writer:
        for value in range(count):
            writer.write(solid(20 * value, size))
    return writer


# -- folders ---------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three PNG frames named out of plain-text order, plus files that are not frames."""
    for value, name in [(10, "frame_10.png"), (2, "frame_2.png"), (1, "frame_1.PNG")]:
        write_image(tmp_path / name, solid(value))
    (tmp_path / "notes.txt").write_text("not a frame")
    write_image(tmp_path / ".hidden.png", solid(99))
    return tmp_path


def test_folder_frames_come_in_natural_name_order_with_their_stems(folder: Path) -> None:
    source = open_source(folder)
    frames = list(source)
    assert [frame.stem for frame in frames] == ["frame_1", "frame_2", "frame_10"]
    assert [frame.index for frame in frames] == [0, 1, 2]
    assert (source.kind, source.frame_count, source.size, source.fps) == ("folder", 3, (12, 20), 24.0)
    assert [source.stem(i) for i in range(3)] == ["frame_1", "frame_2", "frame_10"]
    for frame, value in zip(frames, [1, 2, 10]):
        np.testing.assert_array_equal(frame.rgb, solid(value))


def test_folder_frames_from_start_index(folder: Path) -> None:
    frames = list(open_source(folder).frames(start=1))
    assert [(frame.index, frame.stem) for frame in frames] == [(1, "frame_2"), (2, "frame_10")]


def test_folder_fps_can_be_given(folder: Path) -> None:
    assert open_source(folder, fps=10).fps == 10.0


def test_grey_and_rgba_images_become_rgb(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.full((4, 6), 77, np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.full((4, 6, 4), 200, np.uint8))
    frames = list(open_source(tmp_path))
    assert [frame.rgb.shape for frame in frames] == [(4, 6, 3), (4, 6, 3)]
    assert frames[0].rgb.dtype == np.uint8 and (frames[0].rgb == 77).all()


def test_mixed_sizes_name_the_first_bad_frame(tmp_path: Path) -> None:
    write_image(tmp_path / "00000.png", solid(0, (12, 20)))
    write_image(tmp_path / "00001.png", solid(0, (12, 20)))
    write_image(tmp_path / "00002.png", solid(0, (10, 20)))
    frames = iter(open_source(tmp_path))
    assert [next(frames).stem, next(frames).stem] == ["00000", "00001"]
    with pytest.raises(DinotrackError, match=r"00002\.png is 20x10 pixels.*first frame is 20x12"):
        next(frames)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    write_image(tmp_path / "00000.png", solid(0))
    (tmp_path / "00001.jpg").write_bytes(b"not a jpeg")
    frames = iter(open_source(tmp_path))
    next(frames)
    with pytest.raises(DinotrackError, match=r"00001\.jpg"):
        next(frames)


def test_unreadable_first_image_fails_at_open(tmp_path: Path) -> None:
    (tmp_path / "00000.png").write_bytes(b"not a png")
    with pytest.raises(UsageError, match=r"00000\.png"):
        open_source(tmp_path)


def test_two_frames_with_one_stem_are_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", solid(0))
    write_image(tmp_path / "a.jpg", solid(0))
    with pytest.raises(UsageError, match=r"a\.jpg and a\.png"):
        open_source(tmp_path)


# -- errors at open --------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        open_source(tmp_path / "nowhere.mp4")


def test_text_file_named_mp4(tmp_path: Path) -> None:
    fake = tmp_path / "clip.mp4"
    fake.write_text("this is not a video\n")
    with pytest.raises(UsageError, match=r"Cannot decode .*clip\.mp4 as a video"):
        open_source(fake)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is empty"):
        open_source(tmp_path)


def test_folder_without_images_lists_accepted_suffixes(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(UsageError, match=r"no image files.*\.jpg, \.jpeg, \.png"):
        open_source(tmp_path)


def test_single_image_is_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", solid(0))
    with pytest.raises(UsageError, match="single image"):
        open_source(tmp_path / "a.png")


def test_frame_rate_must_be_positive(folder: Path) -> None:
    with pytest.raises(UsageError, match="frame rate"):
        open_source(folder, fps=0)


# -- videos ----------------------------------------------------------------------------


def test_sample_clip_reads_whole() -> None:
    source = open_source(SAMPLE)
    assert (source.kind, source.frame_count, source.fps, source.size) == ("video", 60, 24.0, (240, 426))
    stems = [frame.stem for frame in source]
    assert stems == [f"{i:05d}" for i in range(60)]


def test_video_frames_match_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, 7, fps=12.5)
    source = open_source(path)
    frames = list(source)
    assert (source.frame_count, len(frames), source.size) == (7, 7, (32, 48))
    assert source.fps == pytest.approx(12.5)
    for value, frame in enumerate(frames):
        assert frame.rgb.shape == (32, 48, 3) and frame.rgb.dtype == np.uint8
        assert np.abs(frame.rgb.astype(int) - solid(20 * value, (32, 48))).mean() < 6  # lossy codec


def test_phone_video_turned_by_its_display_matrix_comes_upright(tmp_path: Path) -> None:
    """Phones store portrait video as landscape pixels plus a rotation: frames come as the viewer sees them."""
    av = pytest.importorskip("av")
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display rotation (PyAV 18 can)")
    path = tmp_path / "phone.mp4"
    stored = np.zeros((64, 96, 3), np.uint8)
    stored[:16, :24] = 255  # a white block at the top left of the stored pixels
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.set_display_rotation(90)  # counter-clockwise: the block shows at the bottom left
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")))
        container.mux(stream.encode())
    source = open_source(path)
    frames = list(source)
    assert source.size == (96, 64) and len(frames) == 3
    bright = np.argwhere(frames[0].rgb[..., 0] > 128)
    assert bright[:, 0].min() >= 96 - 24 - 2 and bright[:, 1].max() < 16 + 2


def test_video_frames_from_start_index(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, 7)
    frames = list(open_source(path).frames(start=4))
    assert [(frame.index, frame.stem) for frame in frames] == [(4, "00004"), (5, "00005"), (6, "00006")]
    assert np.abs(frames[0].rgb.astype(int) - solid(80, (32, 48))).mean() < 6
    assert list(open_source(path).frames(start=50)) == []


def test_negative_start_is_refused() -> None:
    with pytest.raises(ValueError):
        open_source(SAMPLE).frames(start=-1)


def test_video_fps_can_be_overridden() -> None:
    assert open_source(SAMPLE, fps=10).fps == 10.0


def test_davis_folder_reads_whole() -> None:
    folder = DATA / "DAVIS" / "JPEGImages" / "480p" / "blackswan"
    if not folder.is_dir():
        pytest.skip(f"DAVIS is not at {folder}")
    source = open_source(folder)
    stems = [frame.stem for frame in source]
    assert (source.frame_count, source.size) == (50, (480, 854))
    assert stems == [f"{i:05d}" for i in range(50)]


# -- prefetch --------------------------------------------------------------------------


def test_prefetch_yields_everything_in_order() -> None:
    assert list(prefetch(range(100), depth=3)) == list(range(100))


def test_prefetch_reraises_the_producer_error_after_its_items() -> None:
    def failing():
        yield 1
        yield 2
        raise RuntimeError("decoder broke")

    received = []
    with pytest.raises(RuntimeError, match="decoder broke"):
        for item in prefetch(failing()):
            received.append(item)
    assert received == [1, 2]


def test_prefetch_stays_at_most_depth_ahead_and_stops_when_the_consumer_does() -> None:
    produced = []
    finished = threading.Event()

    def endless():
        try:
            while True:
                produced.append(len(produced))
                yield produced[-1]
        finally:
            finished.set()

    items = prefetch(endless(), depth=2)
    assert next(items) == 0
    time.sleep(0.2)
    assert len(produced) <= 1 + 2  # the one taken and a full queue: none made and waiting to be put
    items.close()
    assert finished.is_set()
    assert not any(thread.name == "dinotrack-prefetch" for thread in threading.enumerate())


# -- writer ----------------------------------------------------------------------------


def test_writer_writes_exactly_n_frames(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    writer = write_video(path, 9)
    assert writer.frames_written == 9
    assert decoded_frame_count(path) == 9
    assert not list(tmp_path.glob(".*part*"))


def test_writer_uses_h264_when_pyav_has_libx264(tmp_path: Path) -> None:
    writer = write_video(tmp_path / "out.mp4", 2)
    assert writer.codec == ("h264" if h264_available() else "mp4v")
    if writer.codec == "h264":
        capture = cv2.VideoCapture(str(tmp_path / "out.mp4"))
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
        capture.release()
        assert fourcc in ("avc1", "h264")


def test_writer_mp4v_fallback(tmp_path: Path) -> None:
    writer = write_video(tmp_path / "out.mp4", 5, codec="mp4v")
    assert (writer.codec, decoded_frame_count(tmp_path / "out.mp4")) == ("mp4v", 5)


@pytest.mark.parametrize("codec", ["h264", "mp4v"])
def test_writer_pads_odd_sizes_by_one_pixel(tmp_path: Path, codec: str) -> None:
    if codec == "h264" and not h264_available():
        pytest.skip("PyAV with libx264 is not installed")
    path = tmp_path / "odd.mp4"
    write_video(path, 4, size=(31, 45), codec=codec)
    source = open_source(path)
    assert (source.size, decoded_frame_count(path)) == ((32, 46), 4)


def test_writer_closed_early_leaves_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(path, 24, (32, 48)) as writer:
            for value in range(3):
                writer.write(solid(value, (32, 48)))
            raise KeyboardInterrupt
    assert decoded_frame_count(path) == 3


def test_writer_refuses_frames_of_another_size(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "out.mp4", 24, (32, 48)) as writer:
        with pytest.raises(ValueError, match="Expected"):
            writer.write(solid(0, (48, 32)))
        writer.write(solid(0, (32, 48)))
    with pytest.raises(ValueError, match="closed"):
        writer.write(solid(0, (32, 48)))


def test_writer_in_a_missing_folder_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(DinotrackError, match="Cannot create the video file"):
        VideoWriter(tmp_path / "missing" / "out.mp4", 24, (32, 48))


def test_encoder_failure_surfaces_and_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    def broken(self, rgb):
        raise ValueError("bad frame")

    monkeypatch.setattr(sources._PyAVEncoder, "encode", broken)
    monkeypatch.setattr(sources._OpenCVEncoder, "encode", broken)
    path = tmp_path / "out.mp4"
    writer = VideoWriter(path, 24, (32, 48))
    writer.write(solid(0, (32, 48)))
    with pytest.raises(DinotrackError, match="bad frame"):
        writer.close()
    assert not list(tmp_path.iterdir())


def test_a_full_disk_under_the_encoder_reaches_the_caller_as_an_oserror(tmp_path: Path, monkeypatch) -> None:
    """The caller (the pipeline) words it with what it knows: what was kept, how to resume."""
    def full(self, rgb):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sources._PyAVEncoder, "encode", full)
    monkeypatch.setattr(sources._OpenCVEncoder, "encode", full)
    writer = VideoWriter(tmp_path / "out.mp4", 24, (32, 48))
    writer.write(solid(0, (32, 48)))
    with pytest.raises(OSError, match="No space left"):
        writer.close()
    assert not list(tmp_path.iterdir())
