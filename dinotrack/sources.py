"""Frames in and frames out: lazy readers for videos and image folders, an mp4 writer.

Reading uses OpenCV (FFmpeg backend) and always hands out RGB ``[H, W, 3] uint8``.
Frames are decoded one at a time; nothing here holds a whole video in memory.

Hostile inputs are refused before they are opened or decoded (see
:mod:`dinotrack.inputs` for the checks): FIFOs, devices, symbolic link loops,
names that are not UTF-8, and images or videos whose header claims more than
:data:`~dinotrack.inputs.MAX_IMAGE_PIXELS` pixels a frame. A folder is listed
once (``scandir``, no ``stat`` per regular file) and sorted, O(n log n); only
its first frame is decoded on opening.

A video header is trusted only within reason. A frame rate that is missing,
0, NaN or outside :data:`MIN_FPS`..:data:`MAX_FPS` is replaced by
:data:`FOLDER_FPS` (24) with a warning, since the overlay needs one; a frame
count beyond :data:`MAX_FRAME_COUNT` or above the file's size in bytes is
treated as unknown (``None``), with a warning.

Writing encodes H.264 (yuv420p, playable in browsers) with PyAV when its
wheel ships libx264, and falls back to OpenCV's MPEG-4 Part 2 ("mp4v").
Encoding runs on a background thread so that the caller's loop is not held
up by the encoder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from dinotrack.inputs import image_size, is_utf8, path_problem, printable, too_many_pixels
from dinotrack.queues import QUEUE_BYTES, Budget, ByteQueue, nbytes_of
from dinotrack.structs import DinotrackError, UsageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FOLDER_FPS = 24.0
"""Frame rate given to image folders when the user names none, and to videos whose header gives no sane one."""
MIN_FPS = 0.1
"""Slowest believable video frame rate: one frame every 10 s (slower "videos" are slide shows)."""
MAX_FPS = 1000.0
"""Fastest believable video frame rate: phones' 960 fps slow motion fits. Beyond it a header is
taken as broken: an overlay at such a rate could not be played."""
MAX_FRAME_COUNT = 10_000_000
"""Most frames a video header may claim: over 46 hours at 60 fps. A claim beyond it is taken as
broken, since the count sizes progress bars and lists of frame names."""

SourceKind = Literal["video", "folder"]
Codec = Literal["h264", "mp4v"]


@dataclass
class Frame:
    """One decoded frame: its position in the source, its name and its pixels.

    ``rgb`` is ``[H, W, 3] uint8`` RGB. ``stem`` names the outputs made from this
    frame: the image's file stem for folders, ``"00000"``, ``"00001"``, ... for videos.
    """

    index: int
    stem: str
    rgb: np.ndarray

    @property
    def nbytes(self) -> int:
        """The bytes of its pixels (what a queue of frames counts)."""
        return self.rgb.nbytes

    def without_pixels(self) -> Frame:
        """This frame's index and stem with no pixels (``[0, 0, 3] uint8``), for queues whose readers need no pixels."""
        return Frame(self.index, self.stem, np.empty((0, 0, 3), np.uint8))


@dataclass(frozen=True)
class FrameSource:
    """A video file or a folder of images, read lazily; build it with :func:`open_source`.

    ``size`` is ``(H, W)`` of the first frame; every frame must have it.
    ``frame_count`` is exact for folders and OpenCV's estimate for videos
    (``None`` when the container does not say, or claims more than it can hold). ``files`` lists a folder's
    images in frame order (empty for videos).

    A video yields the frames before the first one FFmpeg cannot decode; when
    that happens before the end the file announces, the iteration ends with a
    :class:`DinotrackError` that says the file is damaged. ``frame_count`` is
    otherwise only a hint for progress bars: the frames yielded are the truth.
    """

    path: Path
    kind: SourceKind
    fps: float
    frame_count: int | None
    size: tuple[int, int]
    files: tuple[Path, ...] = field(default=(), repr=False)

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self, start: int = 0) -> Iterator[Frame]:
        """Yield frames from index ``start`` on (videos decode and skip the first ``start``)."""
        if start < 0:
            raise ValueError(f"start must be 0 or more (got {start}).")
        if self.kind == "folder":
            return self._folder_frames(start)
        return self._video_frames(start)

    def stem(self, index: int) -> str:
        """The name of frame ``index``: its file stem (folders) or ``f"{index:05d}"`` (videos)."""
        return self.files[index].stem if self.kind == "folder" else f"{index:05d}"

    def _folder_frames(self, start: int) -> Iterator[Frame]:
        for index in range(start, len(self.files)):
            rgb = _read_image(self.files[index])
            yield Frame(index, self.files[index].stem, self._checked(rgb, self.files[index].name))

    def _video_frames(self, start: int) -> Iterator[Frame]:
        capture = _open_capture(self.path)
        try:
            index = 0
            while index < start and capture.grab():
                index += 1
            while index >= start and (rgb := _read_capture(capture)) is not None:
                yield Frame(index, self.stem(index), self._checked(rgb, f"frame {index}"))
                index += 1
        finally:
            capture.release()
        self._check_whole(index)

    def _check_whole(self, frames_read: int) -> None:
        """A :class:`DinotrackError` if the video ended after ``frames_read`` frames because it is damaged.

        OpenCV ends a damaged stream as if it were the end, so an early end (fewer
        frames than ``frame_count``) is checked by decoding the file again with PyAV,
        which reports damage as an error. Files whose count is only an estimate, or
        that hide frames with an edit list, decode cleanly to the same end and pass.
        """
        if self.frame_count is None or frames_read >= self.frame_count:
            return
        decodable = _decodable_frames(self.path)
        if decodable is not None and decodable <= frames_read:
            return
        raise DinotrackError(
            f"{self.path} stops decoding after {frames_read} of the {self.frame_count} frames it announces: "
            "the rest of the file is damaged or missing (a truncated or corrupt download or copy). "
            "Copy or download the video again, or re-encode the readable part (e.g. with ffmpeg), then run again."
        )

    def _checked(self, rgb: np.ndarray, name: str) -> np.ndarray:
        """``rgb`` unchanged if it has the first frame's size; a :class:`DinotrackError` otherwise."""
        if rgb.shape[:2] != self.size:
            height, width = rgb.shape[:2]
            raise DinotrackError(
                f"{self.path}: {name} is {width}x{height} pixels, but the first frame is "
                f"{self.size[1]}x{self.size[0]}. Every frame of a sequence must have the same size; "
                "resize or remove the odd frames."
            )
        return rgb


def open_source(path: str | os.PathLike, *, fps: float | None = None) -> FrameSource:
    """Open a video file or a folder of ``.jpg``/``.jpeg``/``.png`` frames.

    The first frame is read now, so an unreadable source fails here with a
    :class:`UsageError`. ``fps``, when given, replaces the video's own rate
    (and the default 24 of folders).
    """
    path = Path(path)
    if fps is not None and not fps > 0:
        raise UsageError(f"The frame rate must be greater than 0 (got {fps}).")
    problem = path_problem(path)
    if problem:
        raise UsageError(
            f"{printable(path)} {problem}. Give a video file or a folder of frames "
            f"({', '.join(IMAGE_SUFFIXES)})."
        )
    if path.is_dir():
        return _open_folder(path, fps)
    return _open_video(path, fps)


def _open_folder(path: Path, fps: float | None) -> FrameSource:
    files = _image_files(path)
    rgb = _read_image(files[0], error=UsageError)
    return FrameSource(path, "folder", fps or FOLDER_FPS, len(files), rgb.shape[:2], tuple(files))


def _image_files(folder: Path) -> list[Path]:
    """The folder's image files in natural name order (``2.jpg`` before ``10.jpg``); hidden files skipped.

    Folders named like images are skipped; any other entry named like an image
    that is not a regular file with a UTF-8 name is refused. The listing gives
    each entry's type, so regular files are neither stat-ed nor opened; plain
    names are sorted (O(n log n)), then made paths.
    """
    entries = _visible_entries(folder)
    if not entries:
        raise UsageError(f"Folder {folder} is empty. Give a folder that holds the frames as image files.")
    images = (entry for entry in entries if os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES)
    names = sorted((entry.name for entry in images if _is_frame_file(folder, entry)), key=_natural_key)
    if not names:
        raise UsageError(
            f"Folder {folder} holds no image files. Frames must be files ending in "
            f"{', '.join(IMAGE_SUFFIXES)} (any case), one per frame, named in frame order."
        )
    _check_unique_stems(folder, names)
    return [folder / name for name in names]


def _visible_entries(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder`` whose names do not start with a dot, listed in one pass."""
    try:
        with os.scandir(folder) as scan:
            return [entry for entry in scan if not entry.name.startswith(".")]
    except OSError as error:
        raise UsageError(f"Cannot list the folder {folder} ({error.strerror}). Give a folder you can read.") from None


def _is_frame_file(folder: Path, entry: os.DirEntry) -> bool:
    """Whether ``entry``, named like an image, is a frame: a regular file with a UTF-8 name.

    ``False`` for a folder; a :class:`UsageError` for anything else (a FIFO, a
    device, a broken link or link loop, a name that is not UTF-8).
    """
    with contextlib.suppress(OSError):  # a link loop, say: described below
        if entry.is_file() and is_utf8(entry.name):  # the file type comes with the listing: no stat per file
            return True
        if entry.is_dir():
            return False
    raise UsageError(
        f"Folder {folder} holds {printable(entry.name)}, which {path_problem(Path(entry.path)) or 'cannot be read'}. "
        "Remove it or put the frame's image file in its place, then run again."
    )


_DIGITS = re.compile(r"(\d+)")


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name)]


def _check_unique_stems(folder: Path, names: list[str]) -> None:
    seen: dict[str, str] = {}
    for name in names:
        stem = os.path.splitext(name)[0]
        if stem in seen:
            raise UsageError(
                f"Folder {folder} holds {seen[stem]} and {name}: two frames with the "
                "same name would write to the same output files. Keep one of them."
            )
        seen[stem] = name


def _read_image(file: Path, *, error: type[DinotrackError] = DinotrackError) -> np.ndarray:
    """``[H, W, 3] uint8`` RGB pixels of a PNG or JPEG file (grey and RGBA become 3-channel RGB).

    The size in the file's header is checked against ``MAX_IMAGE_PIXELS`` before decoding.
    """
    try:
        size = image_size(file)
    except OSError as failure:
        raise error(f"Cannot read the image {file} ({failure.strerror}). Check that it exists and is readable.") from None
    problem = size and too_many_pixels(size)
    if problem:
        raise error(f"The image {file} is {problem}. Downscale the frames (to 8K or less), then run again.")
    bgr = cv2.imread(str(file), cv2.IMREAD_COLOR) if size else None
    if bgr is None:
        raise error(
            f"Cannot read the image {file}: it is damaged or not a .jpg/.png image. "
            "Replace or remove it, then run again."
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)  # in place: no second frame-sized buffer


def _open_video(path: Path, fps: float | None) -> FrameSource:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise UsageError(
            f"{path} is a single image. Give a video file, or the folder that holds all the frames."
        )
    capture = _open_capture(path)
    try:
        _check_video_size(path, capture)
        rgb = _read_capture(capture)
        if rgb is None:
            raise _not_a_video(path)
        claimed_fps = capture.get(cv2.CAP_PROP_FPS)
        claimed_count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    finally:
        capture.release()
    fps = fps or _believable_fps(path, claimed_fps)
    return FrameSource(path, "video", fps, _believable_count(path, claimed_count), rgb.shape[:2])


def _check_video_size(path: Path, capture: cv2.VideoCapture) -> None:
    """A :class:`UsageError` if the frame size the video's header announces exceeds ``MAX_IMAGE_PIXELS``."""
    width, height = capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
    problem = width > 0 and height > 0 and too_many_pixels((int(width), int(height)))
    if problem:
        raise UsageError(
            f"{path} claims frames of {problem}. Downscale the video (to 8K or less, e.g. with ffmpeg "
            "-vf scale=1920:-2), then run again."
        )


def _believable_fps(path: Path, claimed: float) -> float:
    """``claimed``, the header's frame rate, if within MIN_FPS..MAX_FPS; else FOLDER_FPS, with a warning."""
    if MIN_FPS <= claimed <= MAX_FPS:
        return claimed
    log.warning(
        "%s claims %g frames per second, outside %g..%g: its header is broken, so the overlay uses %g. "
        "Re-encode the video with a real frame rate to keep its timing.",
        path, claimed, MIN_FPS, MAX_FPS, FOLDER_FPS,
    )
    return FOLDER_FPS


def _believable_count(path: Path, claimed: float) -> int | None:
    """``claimed``, the header's frame count, as an int; ``None`` (unknown) if missing or beyond belief.

    Beyond belief: more than MAX_FRAME_COUNT, or more frames than the file has
    bytes (every frame takes at least one). The frames decoded are the truth.
    """
    if not claimed > 0:  # 0, negative or NaN: the container does not say
        return None
    if claimed <= min(MAX_FRAME_COUNT, path.stat().st_size):
        return int(claimed)
    log.warning("%s claims %g frames, more than it can hold: its header is broken, so the count is unknown.", path, claimed)
    return None


def _open_capture(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise _not_a_video(path)
    return capture


def _not_a_video(path: Path) -> UsageError:
    return UsageError(
        f"Cannot decode {path} as a video: FFmpeg (through OpenCV) could not open it or read its "
        "first frame, so it is not a video, or a damaged or truncated one. Give a video file such as "
        ".mp4, .mov, .avi or .webm, or a folder of "
        f"{', '.join(IMAGE_SUFFIXES)} frames."
    )


def _decodable_frames(path: Path) -> int | None:
    """How many frames FFmpeg (through PyAV) decodes from ``path``; ``None`` if it meets damage."""
    import av

    try:
        with av.open(str(path)) as container:
            return sum(1 for _ in container.decode(container.streams.video[0]))  # frame threads would hide errors
    except (av.FFmpegError, IndexError):
        return None


def _read_capture(capture: cv2.VideoCapture) -> np.ndarray | None:
    """The next frame as ``[H, W, 3] uint8`` RGB, or ``None`` at the end of the stream.

    The channels are swapped in place: no second frame-sized buffer (25 MB at 4K).
    """
    ok, bgr = capture.read()
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr) if ok else None


_DONE = object()


@dataclass
class _Failure:
    """An exception of the producer thread, carried to the consumer."""

    error: BaseException


def prefetch(iterable: Iterable, depth: int = 4, max_bytes: int = QUEUE_BYTES) -> Iterator:
    """Yield the items of ``iterable``, produced up to ``depth`` ahead on a daemon thread.

    The items waiting hold at most ``max_bytes`` (by their ``nbytes``, see
    :class:`~dinotrack.queues.Budget`; at least one always waits): four
    854x480 frames, but one 3840x2160 one with the default.

    An exception raised by the producer is raised again here, after the items
    produced before it. When the consumer stops early (``close()``, ``break`` in
    a ``for`` loop, garbage collection), the producer stops after its current
    item, its iterator is closed, and the thread is joined.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1 (got {depth}).")
    return _prefetched(iter(iterable), Budget(depth, max_bytes))


def _prefetched(iterator: Iterator, budget: Budget) -> Iterator:
    items: ByteQueue = ByteQueue(budget)
    stop = threading.Event()
    thread = threading.Thread(
        target=_produce, args=(iterator, items, stop), name="dinotrack-prefetch", daemon=True
    )
    thread.start()
    try:
        while (item := items.get()) is not _DONE:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        items.clear()  # wakes a producer waiting for room, which then sees the stop
        thread.join()


def _produce(iterator: Iterator, items: ByteQueue, stop: threading.Event) -> None:
    """Put every item, then ``_DONE`` (or a ``_Failure``); return early once ``stop`` is set.

    The next item is made only once one of the last one's size would fit, so
    none waits in the producer's hands: at 4K one frame is ahead, not two.
    """
    size = 0
    try:
        while not stop.is_set():
            items.wait_for_room(size)
            if stop.is_set():
                return
            item = next(iterator, _DONE)
            items.put(item)
            size = nbytes_of(item)
            if item is _DONE:
                return
    except BaseException as error:  # handed to the consumer, who raises it
        items.put(_Failure(error))
    finally:
        with contextlib.suppress(Exception):
            getattr(iterator, "close", lambda: None)()


def h264_available() -> bool:
    """Whether PyAV is installed and its FFmpeg build has the libx264 encoder."""
    try:
        import av
    except ImportError:
        return False
    return "libx264" in av.codec.codecs_available


class VideoWriter:
    """Write RGB frames to an mp4 file; encoding runs on a background thread.

    ``size`` is ``(H, W)`` of the frames given to :meth:`write`. H.264 in
    yuv420p needs even sides, so an odd height or width is padded by
    repeating the last row or column: the file is then one pixel taller or
    wider than the frames. ``codec`` is ``"h264"`` (PyAV/libx264, CRF 20,
    preset :data:`X264_PRESET`, faststart) or ``"mp4v"`` (OpenCV); ``None`` picks H.264
    when available. At most ``queue_depth`` frames and ``max_bytes`` wait
    for the encoder (at least one; see :class:`~dinotrack.queues.Budget`).

    The video is written under a hidden temporary name and renamed to
    ``path`` by :meth:`close`, so ``path`` is either absent or a complete,
    playable file holding every frame written so far, even when :meth:`close`
    runs early (after an interrupt, through the context manager).
    An encoding failure is raised by the next :meth:`write` or by
    :meth:`close` as a :class:`DinotrackError`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        size: tuple[int, int],
        *,
        codec: Codec | None = None,
        queue_depth: int = 8,
        max_bytes: int = QUEUE_BYTES,
    ) -> None:
        if not fps > 0:
            raise UsageError(f"The frame rate of {path} must be greater than 0 (got {fps}).")
        self.path = Path(path)
        self.size = size
        self.codec: Codec = codec or ("h264" if h264_available() else "mp4v")
        self.frames_written = 0
        self._partial = self.path.with_name(f".{self.path.stem}.part{self.path.suffix}")
        try:
            self._encoder = _open_encoder(self._partial, fps, _even(size), self.codec)
        except OSError as error:
            raise DinotrackError(
                f"Cannot create the video file {self.path}: {error}. "
                "Check that its folder exists and is writable."
            ) from error
        self._frames: ByteQueue = ByteQueue(Budget(queue_depth, max_bytes))
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._encode_all, name="dinotrack-video-writer", daemon=True)
        self._thread.start()

    def write(self, rgb: np.ndarray) -> None:
        """Queue one ``[H, W, 3] uint8`` RGB frame (copied) for encoding."""
        if self._closed:
            raise ValueError(f"The video writer of {self.path} is closed.")
        if rgb.shape != (*self.size, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"Expected a {(*self.size, 3)} uint8 frame, got {rgb.shape} {rgb.dtype}.")
        self._raise_failure()
        self._frames.put(_pad_to_even(rgb))

    def close(self) -> None:
        """Encode the queued frames, finish the file and move it to ``path``. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._frames.put(_DONE)
        self._thread.join()
        if self._error is None:
            os.replace(self._partial, self.path)
            return
        self._partial.unlink(missing_ok=True)
        self._raise_failure()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _encode_all(self) -> None:
        drained = False
        try:
            while (rgb := self._frames.get()) is not _DONE:
                self._encoder.encode(rgb)
                self.frames_written += 1
            drained = True
            self._encoder.close()
        except BaseException as error:  # reported to the caller by write() or close()
            self._error = error
            with contextlib.suppress(Exception):
                self._encoder.close()
            while not drained and self._frames.get() is not _DONE:
                pass

    def _raise_failure(self) -> None:
        """Raise the encoder's failure: an ``OSError`` (full disk, vanished folder) as it is, for the caller to
        word with what it knows; anything else as a :class:`DinotrackError`."""
        if isinstance(self._error, OSError):
            raise self._error
        if self._error is not None:
            raise DinotrackError(
                f"Writing the video {self.path} failed: {self._error}. Check the free disk space "
                "and that the folder is writable."
            ) from self._error


def _even(size: tuple[int, int]) -> tuple[int, int]:
    return size[0] + size[0] % 2, size[1] + size[1] % 2


def _pad_to_even(rgb: np.ndarray) -> np.ndarray:
    """A copy of ``[H, W, 3]`` ``rgb`` with the last row/column repeated where H or W is odd."""
    height, width = rgb.shape[:2]
    return np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


X264_PRESET = "ultrafast"
"""x264's speed preset for overlays: about 3x faster to encode than "veryfast" at 854x480 (CPU ms per
frame) for files about twice the size and the same PSNR; see the README's Performance section."""


class _PyAVEncoder:
    """H.264 yuv420p in an mp4 container through PyAV; frame ``i`` gets timestamp ``i / fps``."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import av

        self._container = av.open(str(path), mode="w", options={"movflags": "+faststart"})
        self._stream = self._container.add_stream(
            "libx264", rate=Fraction(fps).limit_denominator(1001), options={"crf": "20", "preset": X264_PRESET}
        )
        self._stream.height, self._stream.width = size
        self._stream.pix_fmt = "yuv420p"
        self._container.start_encoding()  # opens the file now, so a bad path fails here
        self._next_pts = 0

    def encode(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self._next_pts
        self._next_pts += 1
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()


class _OpenCVEncoder:
    """MPEG-4 Part 2 ("mp4v") through OpenCV, for installs without libx264."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        if not is_utf8(str(path)):  # OpenCV crashes the process on such a name
            raise OSError("its name is not valid UTF-8, which OpenCV's mp4v encoder cannot open")
        height, width = size
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not self._writer.isOpened():
            raise OSError("OpenCV could not open an mp4v encoder for it")

    def encode(self, rgb: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()


def _open_encoder(path: Path, fps: float, size: tuple[int, int], codec: Codec) -> _PyAVEncoder | _OpenCVEncoder:
    if codec == "h264" and not h264_available():
        raise DinotrackError(
            "H.264 video needs PyAV with the libx264 encoder, which this install lacks. "
            "Install the 'av' wheel from PyPI, or write mp4v video instead."
        )
    return _PyAVEncoder(path, fps, size) if codec == "h264" else _OpenCVEncoder(path, fps, size)


def frame_order(names: Iterable[str]) -> list[str]:
    """``names`` in the order a folder's frames are read (natural order: ``frame_2`` before ``frame_10``)."""
    return sorted(names, key=_natural_key)
