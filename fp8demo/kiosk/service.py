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

from .. import config
from ..request import GenerationRequest, GenerationResult
from ..web.service import DemoService
from .moderation import Moderator
from .rules import KioskRefusal, Line, SessionGate, place_text

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class Creation:
    result: GenerationResult
    png: Path
    take_home_url: str | None


class KioskService:
    def __init__(self, service: DemoService, cfg: config.KioskConfig, clock: Callable[[], float] = time.monotonic):
        self.service = service
        self.cfg = cfg
        self.clock = clock
        self.moderator = Moderator.from_file(cfg.blocklist)
        self.gate = SessionGate(cfg.cooldown)
        self.line = Line()
        self.recent: deque[Path] = deque(maxlen=cfg.recent_creations)

    def chips(self) -> list[str]:
        try:
            lines = self.cfg.prompts.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        return [line.strip() for line in lines if line.strip() and not line.startswith("#")][:8]

    def attract_images(self) -> list[str]:
        """Recent approved creations first, then the pictures in assets/kiosk/attract/."""
        recent = [str(p) for p in self.recent if p.exists()]
        folder = self.cfg.attract_dir
        own = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        return recent + own

    def request_for(self, prompt: str) -> GenerationRequest:
        """The kiosk preset: model, steps and size from configuration; the fixed negative prompt always appended."""
        prompt = (prompt or "").strip()
        if len(prompt) > self.cfg.max_prompt_chars:
            raise KioskRefusal(f"That's a long one! Please keep it under {self.cfg.max_prompt_chars} characters.")
        if not prompt:
            raise KioskRefusal("Type an idea or touch one of the suggestions.")
        verdict = self.moderator.check(prompt)
        if not verdict.allowed:
            raise KioskRefusal(verdict.message)
        return GenerationRequest(
            prompt=prompt,
            negative_prompt=self.cfg.negative_prompt,
            steps=self.cfg.steps,
            width=self.cfg.width,
            height=self.cfg.height,
        )

    def create(self, prompt: str, session: str, progress=None) -> Iterator[str | Creation]:
        """Yield status lines while the visitor waits, then the Creation. Raises KioskRefusal or UserError."""
        request = self.request_for(prompt)
        self.service.require_ready()
        self.gate.begin(session, self.clock())
        ticket = self.line.join()
        try:
            ahead = self.line.ahead(ticket)
            while ahead > 0:
                yield place_text(ahead)
                ahead = self.line.wait_turn(ticket, timeout=0.5)
            yield place_text(0)
            result = self.service.generate(request, session, progress)
        finally:
            self.line.leave(ticket)
            self.gate.end(session, self.clock())
        png = self.service.save_png(result)
        self.recent.appendleft(png)
        url = f"{self.cfg.public_url.rstrip('/')}/take/{png.name}" if self.cfg.public_url else None
        yield Creation(result, png, url)


def qr_image(url: str):
    import qrcode

    code = qrcode.QRCode(border=2, box_size=8)
    code.add_data(url)
    code.make(fit=True)
    return code.make_image(fill_color="black", back_color="white").get_image().convert("RGB")

