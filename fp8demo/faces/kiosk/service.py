"""Kiosk mode on top of the shared DemoService: moderation, fairness, the line, recent creations, take-home QR.

Everything a visitor can reach goes through `KioskService.create`, so the page and a direct API call obey the
same rules.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ... import config
from ...errors import Cancelled
from ...request import GenerationRequest, GenerationResult
from ...web.safety import ImageWithheld
from ...web.service import DemoService
from .composer import Tiles, prompt_for
from .moderation import Moderator
from .rules import KioskRefusal, Line, SessionGate, place_text

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
ATTRACT_FOLDER = ".attract"  # in the outputs folder: metadata-free copies of recent creations for the attract loop
ATTRACT_SIDE = 768  # the attract loop's copies: enough for the screen, and no PNG text chunk with the prompt


@dataclass(frozen=True)
class Creation:
    result: GenerationResult
    png: Path
    take_home_url: str | None


# the metrics' reason for each kind of KioskRefusal (the rest are malformed or incomplete requests)
REFUSAL_REASONS = {"prompt": "moderation", "cooldown": "cooldown", "busy": "busy"}


class KioskService:
    def __init__(self, service: DemoService, cfg: config.KioskConfig, clock: Callable[[], float] = time.monotonic):
        self.service = service
        self.cfg = cfg
        self.clock = clock
        self.moderator = Moderator.from_file(cfg.blocklist)
        self.gate = SessionGate(cfg.cooldown)
        # as many visitors make their pictures at once as the pool has engines (one before it has started)
        self.line = Line(lambda: service.pool.size if service.pool is not None else 1)
        # (a metadata-free JPEG copy, its prompt): the attract loop never shows the PNG, which carries the prompt
        self.recent: deque[tuple[Path, str]] = deque(maxlen=cfg.recent_creations)
        # the composer's tiles, where visitors may build a prompt from them (FP8DEMO_KIOSK_INPUT compose or both)
        self.tiles = Tiles.from_file(cfg.tiles) if cfg.input_mode in ("compose", "both") else None

    def chips(self) -> list[str]:
        try:
            lines = self.cfg.prompts.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        return [line.strip() for line in lines if line.strip() and not line.startswith("#")][:8]

    def attract_images(self) -> list[tuple[str, str]]:
        """(picture, caption): recent approved creations first, then the operator's pictures (attract_dir). The
        caption is the creation's prompt only when the operator turned captions on (visitors' words stay private
        otherwise)."""
        captions = self.cfg.attract_captions
        recent = [(str(p), prompt if captions else "") for p, prompt in self.recent if p.exists()]
        folder = self.cfg.attract_dir
        own = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        return recent + [(p, "") for p in own]

    def size_for(self, portrait: bool) -> tuple[int | None, int | None]:
        """The configured size; else the preset's own (square) on a landscape screen and its 9:16 size on a
        portrait one, so that the picture fills most of the screen's height either way."""
        if self.cfg.width is not None or self.cfg.height is not None or not portrait:
            return self.cfg.width, self.cfg.height
        sizes = config.aspect_sizes(self.service.preset)
        return next(size for label, size in sizes.items() if label.startswith("9:16 "))

    def request_for(self, prompt: str, portrait: bool = False, tiles=None) -> GenerationRequest:
        """The kiosk preset: model, steps and size from configuration; the fixed negative prompt always appended
        (the engine drops it, and the PNG does not record it, where guidance <= 1 gives it no effect). `tiles`: the
        composer's choice (part -> tile), rebuilt from the operator's tiles and so not moderated; the input mode
        decides which of free text and tiles this screen takes (composer.prompt_for)."""
        prompt, approved = prompt_for(self.cfg.input_mode, prompt, tiles, self.tiles)
        if approved:
            return self._request(prompt, portrait)
        if prompt is not None and not isinstance(prompt, str):
            raise KioskRefusal("The prompt must be text: type an idea or touch one of the suggestions.")
        prompt = (prompt or "").strip()
        if len(prompt) > self.cfg.max_prompt_chars:
            raise KioskRefusal(f"That's a long one! Please keep it under {self.cfg.max_prompt_chars} characters.")
        if not prompt:
            raise KioskRefusal("Type an idea or touch one of the suggestions.")
        verdict = self.moderator.check(prompt)
        if not verdict.allowed:
            raise KioskRefusal(verdict.message, "prompt")
        return self._request(prompt, portrait)

    def _request(self, prompt: str, portrait: bool) -> GenerationRequest:
        width, height = self.size_for(portrait)
        return GenerationRequest(
            prompt=prompt,
            negative_prompt=self.cfg.negative_prompt,
            steps=self.cfg.steps,
            width=width,
            height=height,
        )

    def create(self, prompt: str, client: str, progress=None, preview=None,
               portrait: bool = False, gone=None, tiles=None) -> Iterator[str | Creation]:
        """Yield status lines while the visitor waits, then the Creation. Raises KioskRefusal or UserError, or
        Cancelled when `gone()` says the visitor left (in the line or mid-picture). `client` is the fairness key:
        the screen's address, which its visitors cannot change (access.client_address). `preview` gets the forming
        picture after each step (those the image safety layer passes), and None when the finished picture is
        withheld (ImageWithheld, a UserError): the screen then shows no picture; `tiles`: the composer's choice
        instead of free text (request_for)."""
        try:
            request = self.request_for(prompt, portrait, tiles)
            self.service.require_ready()
            self.gate.begin(client, self.clock())
        except KioskRefusal as refusal:  # counted in the metrics as the others are: by why
            self.service.refused(REFUSAL_REASONS.get(refusal.kind, "invalid"))
            raise
        ticket = self.line.join()
        try:
            ahead = self.line.ahead(ticket)
            while ahead > 0:
                if gone is not None and gone():
                    raise Cancelled("The visitor left the line.")
                yield place_text(ahead)
                ahead = self.line.wait_turn(ticket, timeout=0.5)
            yield place_text(0)
            try:
                result = self.service.generate(request, client, progress, preview, gone=gone)
            except ImageWithheld:
                if preview is not None:
                    preview(None)  # the forming picture leaves the screen too: nothing of a withheld one stays
                raise
        finally:
            self.line.leave(ticket)
            self.gate.end(client, self.clock())
        png = self.service.save_png(result)
        url = f"{self.cfg.public_url.rstrip('/')}/take/{png.name}" if self.cfg.public_url else None
        yield Creation(result, png, url)
        # after the visitor has the picture: the attract loop's copy
        self.recent.appendleft((self._attract_copy(result, png), result.request.prompt))

    def _attract_copy(self, result: GenerationResult, png: Path) -> Path:
        folder = self.service.output_dir / ATTRACT_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        image = result.image.convert("RGB")
        image.thumbnail((ATTRACT_SIDE, ATTRACT_SIDE))
        path = folder / f"{png.stem}.jpg"
        image.save(path, format="JPEG", quality=85)  # no text chunk, no EXIF: the prompt is not in the file
        return path


def qr_image(url: str):
    import qrcode

    code = qrcode.QRCode(border=2, box_size=10)  # crisp when the page shows it at 260 px
    code.add_data(url)
    code.make(fit=True)
    return code.make_image(fill_color="black", back_color="white").get_image().convert("RGB")

