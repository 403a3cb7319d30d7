#!/usr/bin/env python3
"""Small images whose orientation is written in XMP metadata (and, in some, also in EXIF), with the
orientation PIL's ImageOps.exif_transpose applies to each, for the vision tests:

    python3 tests/reference/make_xmp_goldens.py tests/data/goldens/vision/xmp

Writes the images and xmp.json ({file: orientation 1-8}). The metadata is spliced in by hand (PNG
iTXt/tEXt/eXIf chunks, a JPEG APP1 segment, a WebP VP8X container with an "XMP " chunk), so the
files do not depend on what PIL's writers support; PIL only reads them.
"""
import io
import json
import os
import struct
import sys
import zlib

from PIL import Image, ImageOps


def base_image():
    im = Image.new("RGB", (12, 8))
    px = im.load()
    for y in range(8):
        for x in range(12):
            px[x, y] = (x * 20, y * 30, (x < 6) * 200 + (y < 4) * 50)
    return im


def packet(orientation, element):
    value = (f"<tiff:Orientation>{orientation}</tiff:Orientation>" if element else f'tiff:Orientation="{orientation}"')
    inner = f"<rdf:Description>{value}</rdf:Description>" if element else f"<rdf:Description {value}/>"
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            'xmlns:tiff="http://ns.adobe.com/tiff/1.0/">' + inner + "</rdf:RDF></x:xmpmeta>").encode()


def tiff_block(tag, value):
    return b"MM\x00*" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", tag, 3, 1, value, 0) + struct.pack(">I", 0)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(chunks):
    buf = io.BytesIO()
    base_image().save(buf, "PNG")
    b = buf.getvalue()
    end_of_ihdr = 8 + 8 + 13 + 4
    return b[:end_of_ihdr] + b"".join(png_chunk(k, d) for k, d in chunks) + b[end_of_ihdr:]


KEY = b"XML:com.adobe.xmp\x00"


def itxt(p):
    return (b"iTXt", KEY + b"\x00\x00" + b"\x00" + b"\x00" + p)  # not compressed, no language, no translation


def jpeg(p):
    buf = io.BytesIO()
    base_image().save(buf, "JPEG", quality=95)
    b = buf.getvalue()
    body = b"http://ns.adobe.com/xap/1.0/\x00" + p
    return b[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + b[2:]


def webp(p):
    buf = io.BytesIO()
    base_image().save(buf, "WEBP", lossless=True)
    b = buf.getvalue()
    assert b[12:16] == b"VP8L", b[12:16]
    image_chunk = b[12:]
    w, h = base_image().size
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x04, 0, 0, 0]) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    xmp = b"XMP " + struct.pack("<I", len(p)) + p + (b"\x00" if len(p) % 2 else b"")
    body = b"WEBP" + vp8x + image_chunk + xmp
    return b"RIFF" + struct.pack("<I", len(body)) + body


TRANSPOSES = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def applied(data):
    """The orientation PIL's exif_transpose applies: which transpose of the plain image it gives."""
    plain = Image.open(io.BytesIO(data)).convert("RGB")
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    for o in range(1, 9):
        candidate = plain if o == 1 else plain.transpose(TRANSPOSES[o])
        if candidate.size == upright.size and candidate.tobytes() == upright.tobytes():
            return o
    raise RuntimeError("no orientation matches")


def main(out):
    os.makedirs(out, exist_ok=True)
    files = {
        "itxt_attribute_6.png": png([itxt(packet(6, False))]),
        "text_element_3.png": png([(b"tEXt", KEY + packet(3, True))]),
        "exif_8_and_xmp_6.png": png([(b"eXIf", tiff_block(0x0112, 8)), itxt(packet(6, False))]),
        "exif_without_orientation_xmp_5.png": png([(b"eXIf", tiff_block(0x0131, 1)), itxt(packet(5, False))]),
        "app1_xmp_6.jpg": jpeg(packet(6, False)),
        "xmp_7.webp": webp(packet(7, True)),
    }
    golden = {}
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        golden[name] = applied(data)
        print(name, golden[name], flush=True)
    with open(os.path.join(out, "xmp.json"), "w") as f:
        json.dump(golden, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
