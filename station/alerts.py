"""An INSPECT item's alert for central: its lifecycle message and the small thumbnail it carries.

An alert lives as long as the item needs a person: `new` when the item is first INSPECT (or becomes
INSPECT again after a revision to CLEAR), `update` when a later revision or an undone verdict changes
it while it stays open, `end` when it is dealt with (an operator's verdict) or revised to CLEAR. Its
`alert_id` is the item's uid for the whole lifecycle; each message's `msg_id` is fixed by what caused
it (the revision, the verdict), so a message stored twice or published twice is the same message.

The thumbnail is a JPEG of the console's standard view (`kernel.viewer.render_view`), its longer side
at most THUMB_MAX_SIDE and its size at most THUMB_MAX_BYTES: the quality is stepped down until it fits.
The thumbnail itself, not a reference to fetch it by: central cannot reach into a lane's network (the
console is a local service, with local accounts), and an alert must be shown where it arrives. Only
the `new` message carries it; an `update` or `end` says it came with the alert's `new` (the scan cannot
change during an alert: every message carries the same `scan_id` and `image_sha256`), so a verdict
never decodes an image and the link carries the bytes once per alert.
Pure, apart from reading the scan file it is given.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from station.kernel.imaging import ImageError, LoadedImage, load_image
from station.kernel.viewer import View, render_view

SCHEMA = "screening/v1/item-alert"
THUMB_MAX_SIDE = 256
THUMB_MAX_BYTES = 24 * 1024
THUMB_QUALITIES = (80, 65, 50, 35, 20)  # stepped down until the JPEG fits in THUMB_MAX_BYTES

Event = Literal["new", "update", "end"]


@dataclass(frozen=True)
class Thumbnail:
    width: int
    height: int
    jpeg: bytes

    def as_json(self) -> dict[str, object]:
        return {"type": "image/jpeg", "width": self.width, "height": self.height,
                "data": base64.b64encode(self.jpeg).decode("ascii")}


class ThumbnailMissing(Exception):
    """No thumbnail could be made; str() says why (it goes into the alert's `thumbnail_missing`)."""


def thumbnail_of(image: LoadedImage, max_bytes: int = THUMB_MAX_BYTES) -> Thumbnail:
    """The standard view of `image`, its longer side at most THUMB_MAX_SIDE, as a JPEG of at most
    `max_bytes`: the first of THUMB_QUALITIES that fits. ThumbnailMissing when none does."""
    picture = render_view(image, View(), max_side=THUMB_MAX_SIDE)
    height, width = picture.shape[:2]
    for quality in THUMB_QUALITIES:
        ok, buf = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and buf.size <= max_bytes:
            return Thumbnail(int(width), int(height), bytes(np.asarray(buf).tobytes()))
    raise ThumbnailMissing(f"no JPEG of {width}x{height} fits in {max_bytes} bytes "
                           f"(quality down to {THUMB_QUALITIES[-1]})")


def thumbnail_file(path: str | None) -> Thumbnail:
    """The thumbnail of the scan stored at `path`; ThumbnailMissing with the reason when there is none."""
    if path is None:
        raise ThumbnailMissing("no scan was kept for this item")
    try:
        return thumbnail_of(load_image(path))
    except ImageError as err:
        raise ThumbnailMissing(f"the kept scan cannot be read: {err}") from err
    except cv2.error as err:
        raise ThumbnailMissing(f"the kept scan cannot be rendered: {err}") from err


def alert_payload(result: Mapping[str, object], *, msg_id: str, event: Event, changes: list[str],
                  thumbnail: Thumbnail | ThumbnailMissing | None) -> dict[str, object]:
    """The `items/alert` message: the result fields of the item's current revision (`result`, as
    `items/result` carries them), the lifecycle (`alert_id`, `event`, `changes`) and the thumbnail:
    a Thumbnail, why there is none (ThumbnailMissing), or None on an update or end (its `new` had it)."""
    if isinstance(thumbnail, Thumbnail):
        picture: dict[str, object] | None = thumbnail.as_json()
        missing = None
    else:
        picture = None
        missing = str(thumbnail) if thumbnail is not None else "sent with this alert's new message (same alert_id)"
    return {**result, "msg_id": msg_id, "schema": SCHEMA, "alert_id": result["uid"], "event": event,
            "changes": list(changes), "thumbnail": picture, **({"thumbnail_missing": missing} if missing else {})}
