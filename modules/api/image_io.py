"""Images in and out of the API: base64 (with or without a `data:` prefix), guarded URL fetches,
and base64 output in the `samples_format` with the infotext embedded (spec §1.1).

URL inputs are refused unless the option `api_enable_requests` is on; then only public addresses
are fetched (`api_forbid_local_requests`), without following redirects, with a size cap.
The live preview the progress routes return is made here too, from the running job's latent.
"""
from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
import time
from typing import Any
from urllib.parse import urlparse

from PIL import Image

from modules import errors, shared

_URL_TIMEOUT_S = 30


def _check_pixels(image: Image.Image, field: str) -> None:
    limit = int(shared.opts.api_max_pixels)
    w, h = image.size
    if w * h > limit:
        raise errors.InvalidImage(
            f"{field}: image of {w}x{h} pixels exceeds api_max_pixels={limit}", field=field)


# Raster formats a client may send. Vector/PostScript formats are left out on purpose: Pillow hands
# EPS to Ghostscript when that is installed.
INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


def _open(data: bytes, field: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
    except Exception as e:
        raise errors.InvalidImage(f"{field}: Invalid encoded image ({type(e).__name__}: {e})", field=field) from e
    _check_pixels(image, field)
    try:
        image.load()
    except Exception as e:
        raise errors.InvalidImage(f"{field}: Invalid encoded image ({type(e).__name__}: {e})", field=field) from e
    return image


def is_public_unicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True only for a globally routable unicast address: not private, loopback, link-local,
    shared (CGNAT), reserved, unspecified, multicast or broadcast, and for an IPv6 address that
    embeds an IPv4 one (mapped, 6to4, Teredo), the embedded address must pass too."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = [address.ipv4_mapped, address.sixtofour, address.teredo[1] if address.teredo else None]
        if any(x is not None and not is_public_unicast(x) for x in embedded):
            return False
    return (address.is_global and not address.is_multicast and not address.is_reserved
            and not address.is_unspecified and not address.is_loopback and not address.is_link_local
            and not address.is_private and address != ipaddress.IPv4Address("255.255.255.255"))


def _public_address(host: str, field: str) -> str:
    """The address to connect to for `host`; refused if any of its addresses is not a globally
    routable unicast address (see :func:`is_public_unicast`)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as e:
        raise errors.InvalidImage(f"{field}: Invalid image url: cannot resolve {host!r}", field=field) from e
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if not is_public_unicast(address):
            raise errors.InvalidImage(
                f"{field}: Invalid image url: {host!r} resolves to non-public address {address}", field=field)
    return str(addresses[0])


def _fetch_url(url: str, field: str) -> bytes:
    """GET `url` with redirects off, a total time limit and a body cap.

    With `api_forbid_local_requests` the host is resolved once, every address must be public, and
    the connection goes to that checked address (Host header and TLS SNI keep the name), so a
    second DNS answer cannot point the fetch at a local service.
    """
    import httpx

    parsed = urlparse(url)
    host = parsed.hostname or ""
    headers = {"user-agent": shared.opts.api_useragent} if shared.opts.api_useragent else {}
    extensions: dict[str, str] = {}
    target = url
    if shared.opts.api_forbid_local_requests:
        address = _public_address(host, field)
        netloc = f"[{address}]" if ":" in address else address
        if parsed.port:
            netloc += f":{parsed.port}"
        target = parsed._replace(netloc=netloc).geturl()
        headers["host"] = parsed.netloc.rsplit("@", 1)[-1]
        extensions["sni_hostname"] = host
    limit = int(shared.opts.api_max_body_mb) * 1024 * 1024
    deadline = time.monotonic() + _URL_TIMEOUT_S  # httpx's timeout is per read, not per fetch
    try:
        with httpx.Client(timeout=_URL_TIMEOUT_S, follow_redirects=False) as client:
            request = client.build_request("GET", target, headers=headers, extensions=extensions)
            r = client.send(request, stream=True)
            try:
                if r.status_code != 200:
                    raise errors.InvalidImage(f"{field}: Invalid image url: HTTP {r.status_code} from {url!r}",
                                              field=field)
                chunks, size = [], 0
                for chunk in r.iter_bytes():
                    if time.monotonic() > deadline:
                        raise errors.InvalidImage(
                            f"{field}: Invalid image url: {url!r} took longer than {_URL_TIMEOUT_S} s", field=field)
                    size += len(chunk)
                    if size > limit:
                        raise errors.InvalidImage(f"{field}: image at {url!r} exceeds api_max_body_mb", field=field)
                    chunks.append(chunk)
            finally:
                r.close()
    except httpx.HTTPError as e:
        raise errors.InvalidImage(f"{field}: Invalid image url {url!r}: {e}", field=field) from e
    return b"".join(chunks)


def decode_base64_to_image(encoding: str, field: str = "image") -> Image.Image:
    """Decode a request image: base64 (optional `data:image/...;base64,` prefix) or an http(s) URL.

    Raises:
        errors.InvalidImage: malformed base64, unreadable image, refused or failed URL, too many pixels.
    """
    if not isinstance(encoding, str) or not encoding:
        raise errors.InvalidImage(f"{field}: no image given", field=field)
    if encoding.startswith(("http://", "https://")):
        if not shared.opts.api_enable_requests:
            raise errors.InvalidImage(
                f"{field}: image URLs are disabled (enable the option api_enable_requests)", field=field)
        return _open(_fetch_url(encoding, field), field)
    if encoding.startswith("data:"):
        encoding = encoding.split(";", 1)[1].split(",", 1)[1] if ";" in encoding and "," in encoding else ""
    try:
        data = base64.b64decode(encoding, validate=False)
    except (binascii.Error, ValueError) as e:
        raise errors.InvalidImage(f"{field}: Invalid encoded image (bad base64: {e})", field=field) from e
    return _open(data, field)


def encode_pil_to_base64(image: Image.Image, fmt: str | None = None) -> str:
    """Base64 (no `data:` prefix) of `image` in `fmt` (default: option `samples_format`).

    Encoding is `infotext_utils.image_to_bytes`: PNG keeps every string of `image.info` (the
    infotext is `parameters`), JPEG/WebP carry `parameters` as EXIF UserComment.
    """
    from modules import infotext_utils
    data = infotext_utils.image_to_bytes(image, fmt or shared.opts.samples_format, None)
    return base64.b64encode(data).decode("ascii")


_MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}


def media_type(name: str) -> str:
    """The media type of an image file the API serves (a job's result), from its extension."""
    return _MEDIA_TYPES.get(name.rsplit(".", 1)[-1].lower(), "application/octet-stream")
