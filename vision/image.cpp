#include "vision/image.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <stb_image.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>

#include "engine/util/error.h"
#include "engine/util/text_file.h"
#include "engine/util/thread_pool.h"

namespace lumen::vision {
namespace {

using Bytes = std::span<const uint8_t>;

uint32_t be16(Bytes b, size_t at) { return uint32_t(b[at]) << 8 | b[at + 1]; }
uint32_t be32(Bytes b, size_t at) { return be16(b, at) << 16 | be16(b, at + 2); }
uint32_t le16(Bytes b, size_t at) { return uint32_t(b[at]) | uint32_t(b[at + 1]) << 8; }
uint32_t le24(Bytes b, size_t at) { return le16(b, at) | uint32_t(b[at + 2]) << 16; }
uint32_t le32(Bytes b, size_t at) { return le16(b, at) | le16(b, at + 2) << 16; }

bool starts_with(Bytes b, const char* magic, size_t at = 0) {
    const size_t n = std::strlen(magic);
    return b.size() >= at + n && std::memcmp(b.data() + at, magic, n) == 0;
}

[[noreturn]] void fail(const std::string& what) { throw Error(what); }

// Each JPEG segment with a length, up to the first scan: SOF gives the size, APP1 may hold EXIF.
// `visit` returns true to stop. Returns where the walk stopped (the start-of-scan marker, or the
// segment `visit` stopped at).
template <typename Visit>
size_t walk_jpeg_segments(Bytes b, Visit visit) {
    size_t at = 2;
    while (at + 4 <= b.size()) {
        if (b[at] != 0xFF) fail("broken JPEG: expected a marker at byte " + std::to_string(at));
        const uint8_t marker = b[at + 1];
        if (marker == 0xFF) {  // fill byte
            ++at;
            continue;
        }
        if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {  // no length
            at += 2;
            continue;
        }
        if (marker == 0xD9) fail("broken JPEG: it ends before any image data");
        if (marker == 0xDA) return at;  // start of scan
        const size_t length = be16(b, at + 2);
        if (length < 2 || at + 2 + length > b.size()) fail("truncated JPEG: a header segment runs past the end of the file");
        if (visit(marker, b.subspan(at + 4, length - 2))) return at;
        at += 2 + length;
    }
    fail("truncated JPEG: the file ends inside its headers");
}

// A JPEG is complete when an end-of-image marker follows its first scan (inside scans a 0xFF byte
// is always followed by 0x00 or a marker, so the pair cannot occur by chance); libjpeg would
// otherwise fill the missing part with grey and only warn.
bool jpeg_has_end(Bytes b) {
    const size_t scan = walk_jpeg_segments(b, [](uint8_t, Bytes) { return false; });
    for (size_t i = scan + 1; i < b.size(); ++i)
        if (b[i - 1] == 0xFF && b[i] == 0xD9) return true;
    return false;
}

// The CRC-32 of PNG chunks (ISO 3309, the polynomial zlib uses).
uint32_t crc32_of(const uint8_t* p, size_t n) {
    static const auto table = [] {
        std::array<uint32_t, 256> t{};
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

// Walks the PNG chunks to IEND so that a cut or damaged file is named as such, not decoded into
// garbage: each chunk's checksum is verified (as PIL does) and image data must come before IEND.
void check_png_chunks(Bytes b) {
    size_t at = 8;
    bool has_data = false;
    while (true) {
        if (at + 12 > b.size()) fail("truncated PNG: the file ends before its last chunk (IEND)");
        const uint64_t length = be32(b, at);
        const std::string type(reinterpret_cast<const char*>(b.data() + at + 4), 4);
        if (at + 12 + length > b.size()) fail("truncated PNG: chunk " + type + " runs past the end of the file");
        if (crc32_of(b.data() + at + 4, size_t(length) + 4) != be32(b, at + 8 + size_t(length)))
            fail("broken PNG: chunk " + type + " fails its checksum");
        if (type == "IDAT") has_data = true;
        if (type == "IEND") {
            if (!has_data) fail("broken PNG: it has no image data");
            return;
        }
        at += 12 + length;
    }
}

// The orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block; 0 when there is none.
int tiff_orientation(Bytes t) {
    if (starts_with(t, "Exif")) t = t.subspan(std::min<size_t>(6, t.size()));
    if (t.size() < 8) return 0;
    const bool le = t[0] == 'I' && t[1] == 'I';
    if (!le && !(t[0] == 'M' && t[1] == 'M')) return 0;
    auto u16 = [&](size_t at) { return le ? le16(t, at) : be16(t, at); };
    auto u32 = [&](size_t at) { return le ? le32(t, at) : be32(t, at); };
    const size_t ifd = u32(4);
    if (ifd + 2 > t.size()) return 0;
    const size_t count = u16(ifd);
    for (size_t i = 0; i < count; ++i) {
        const size_t entry = ifd + 2 + 12 * i;
        if (entry + 12 > t.size()) return 0;
        if (u16(entry) == 0x0112) {
            const int v = int(u16(entry + 8));
            return v >= 1 && v <= 8 ? v : 1;
        }
    }
    return 0;
}

// The orientation an XMP packet gives (tiff:Orientation="6" or <tiff:Orientation>6<...), read as
// PIL reads it: the first such digit; 0 when there is none.
int xmp_orientation(Bytes x) {
    const std::string_view text(reinterpret_cast<const char*>(x.data()), x.size()), tag = "tiff:Orientation";
    for (size_t at = text.find(tag); at != std::string_view::npos; at = text.find(tag, at + 1)) {
        size_t p = at + tag.size();
        if (text.substr(p, 2) == "=\"") p += 2;
        else if (text.substr(p, 1) == ">") p += 1;
        else continue;
        if (p < text.size() && text[p] >= '0' && text[p] <= '9') return text[p] - '0';
    }
    return 0;
}

// The RIFF chunks of a WebP file: (fourcc, payload).
template <typename Visit>
void walk_webp_chunks(Bytes b, Visit visit) {
    size_t at = 12;
    while (at + 8 <= b.size()) {
        const std::string fourcc(reinterpret_cast<const char*>(b.data() + at), 4);
        const size_t length = le32(b, at + 4);
        const size_t payload = std::min(length, b.size() - at - 8);
        if (visit(fourcc, b.subspan(at + 8, payload))) return;
        at += 8 + length + (length & 1);
    }
}

// PIL's convert("RGB") of what OpenCV decoded (BGR order, 1, 3 or 4 channels, 8 or 16 bits), into
// `out` (of m's size): alpha is dropped without compositing, grey is repeated, 16-bit colour
// keeps its high byte and 16-bit grey (PIL's mode I;16) is clipped at 255, not scaled. `m` may
// hold out's own rows (8-bit BGR decoded in place): then blue and red are swapped there.
void to_rgb(const cv::Mat& m, RgbImage& out) {
    const int channels = m.channels();
    const bool wide = m.depth() == CV_16U;
    if (!wide && m.depth() != CV_8U) fail("unsupported image sample type");
    // Rows are independent: split over the shared worker threads (a screenshot is 2 million pixels).
    ThreadPool::shared().parallel_for(size_t(m.rows), 16, [&](size_t begin, size_t end) {
        for (int y = int(begin); y < int(end); ++y) {
            uint8_t* o = out.row(y);
            if (!wide && channels >= 3) {
                // The common case, 8-bit BGR or BGRA: the channels swapped, alpha dropped.
                const uint8_t* in = m.ptr<uint8_t>(y);
                if (in == o) {
                    for (int x = 0; x < m.cols; ++x) std::swap(o[3 * x], o[3 * x + 2]);
                    continue;
                }
                for (int x = 0; x < m.cols; ++x) {
                    o[3 * x] = in[channels * x + 2];
                    o[3 * x + 1] = in[channels * x + 1];
                    o[3 * x + 2] = in[channels * x];
                }
                continue;
            }
            for (int x = 0; x < m.cols; ++x) {
                uint8_t c[4] = {};
                for (int k = 0; k < channels && k < 4; ++k) {
                    if (!wide) {
                        c[k] = m.ptr<uint8_t>(y)[x * channels + k];
                    } else {
                        const uint16_t v = m.ptr<uint16_t>(y)[x * channels + k];
                        c[k] = channels == 1 ? uint8_t(std::min<uint16_t>(v, 255)) : uint8_t(v >> 8);
                    }
                }
                if (channels < 3) {
                    o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = c[0];
                } else {
                    o[3 * x] = c[2];
                    o[3 * x + 1] = c[1];
                    o[3 * x + 2] = c[0];
                }
            }
        }
    });
}

// The first frame of a GIF as PIL shows it: a canvas of the screen size (grown to the frame if
// that is larger) filled with the transparent index, else index 0; the frame's indices written
// as they are, transparent ones included; colours from the local table, else the global one.
//
// stb_image decodes the LZW data and the interlacing. It composites colours rather than
// indices, so it is given a copy whose colour tables say each entry's own index (entry i is
// grey level i), whose background index is 0 (so undrawn pixels stay transparent) and whose
// screen holds the frame; the indices it reports are then coloured as PIL colours them.
RgbImage decode_gif(Bytes b, int64_t max_pixels) {
    auto need = [&](size_t at, size_t n) {
        if (at + n > b.size()) fail("truncated GIF: the file ends before its first frame is complete");
    };
    std::vector<uint8_t> copy(b.begin(), b.end());
    auto identity_table = [&](size_t at, size_t entries) {
        for (size_t i = 0; i < entries; ++i) copy[at + 3 * i] = copy[at + 3 * i + 1] = copy[at + 3 * i + 2] = uint8_t(i);
    };
    need(0, 13);
    int canvas_w = int(le16(b, 6)), canvas_h = int(le16(b, 8));
    size_t at = 13;
    std::vector<uint8_t> palette;
    if (b[10] & 0x80) {
        const size_t n = size_t(3) << ((b[10] & 7) + 1);
        need(at, n);
        palette.assign(b.begin() + ptrdiff_t(at), b.begin() + ptrdiff_t(at + n));
        identity_table(at, n / 3);
        at += n;
    }
    copy[11] = 0;  // the background index
    std::optional<int> transparent;
    auto skip_sub_blocks = [&] {
        for (;;) {
            need(at, 1);
            const size_t n = b[at++];
            if (n == 0) return;
            need(at, n);
            at += n;
        }
    };
    for (;;) {
        need(at, 1);
        const uint8_t kind = b[at++];
        if (kind == 0x3B) fail("broken GIF: it has no image");
        if (kind == 0x21) {
            need(at, 1);
            const uint8_t label = b[at++];
            if (label == 0xF9 && at + 5 <= b.size() && b[at] >= 4) {
                if (b[at + 1] & 1) transparent = b[at + 4];
            }
            skip_sub_blocks();
            continue;
        }
        if (kind != 0x2C) fail("broken GIF: unknown block");
        break;
    }
    need(at, 9);
    const int left = int(le16(b, at)), top = int(le16(b, at + 2)), w = int(le16(b, at + 4)), h = int(le16(b, at + 6));
    const uint8_t flags = b[at + 8];
    at += 9;
    if (flags & 0x80) {
        const size_t n = size_t(3) << ((flags & 7) + 1);
        need(at, n);
        palette.assign(b.begin() + ptrdiff_t(at), b.begin() + ptrdiff_t(at + n));
        identity_table(at, n / 3);
        at += n;
    }
    if (w == 0 || h == 0) fail("broken GIF: its first frame is empty");
    canvas_w = std::max(canvas_w, left + w);
    canvas_h = std::max(canvas_h, top + h);
    if (int64_t(canvas_w) * canvas_h > max_pixels) fail("the GIF's first frame is larger than the image limit");
    need(at, 1);
    if (b[at] < 2 || b[at] > 8) fail("broken GIF: bad LZW code size");
    ++at;
    skip_sub_blocks();  // the frame's data must be whole; a cut file is named as such
    copy[6] = uint8_t(canvas_w & 0xFF), copy[7] = uint8_t(canvas_w >> 8);
    copy[8] = uint8_t(canvas_h & 0xFF), copy[9] = uint8_t(canvas_h >> 8);

    int got_w = 0, got_h = 0, channels = 0;
    std::unique_ptr<stbi_uc, void (*)(void*)> rgba(
        stbi_load_from_memory(copy.data(), int(copy.size()), &got_w, &got_h, &channels, 4), stbi_image_free);
    if (!rgba) fail(std::string("broken GIF: ") + stbi_failure_reason());
    if (got_w != canvas_w || got_h != canvas_h) fail("broken GIF: the decoded size differs from the header's");

    RgbImage out(canvas_w, canvas_h);
    const size_t count = size_t(canvas_w) * size_t(canvas_h);
    for (size_t i = 0; i < count; ++i) {
        const stbi_uc* px = rgba.get() + 4 * i;
        const uint8_t index = px[3] ? px[0] : uint8_t(transparent.value_or(0));
        const size_t e = size_t(index) * 3;
        for (int c = 0; c < 3; ++c)
            out.pixels[i * 3 + size_t(c)] = palette.empty() ? index : e + 2 < palette.size() ? palette[e + size_t(c)] : 0;
    }
    return out;
}

}  // namespace

const char* format_name(ImageFormat f) {
    switch (f) {
    case ImageFormat::Png: return "PNG";
    case ImageFormat::Jpeg: return "JPEG";
    case ImageFormat::WebP: return "WebP";
    case ImageFormat::Bmp: return "BMP";
    case ImageFormat::Gif: return "GIF";
    }
    return "image";
}

ImageInfo probe_image(Bytes b) {
    if (b.empty()) fail("the image file is empty");
    ImageInfo info;
    if (starts_with(b, "\x89PNG\r\n\x1a\n")) {
        if (b.size() < 24 || !starts_with(b, "IHDR", 12)) fail("truncated PNG: no image header");
        info = {ImageFormat::Png, int(be32(b, 16)), int(be32(b, 20))};
    } else if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
        info.format = ImageFormat::Jpeg;
        walk_jpeg_segments(b, [&](uint8_t marker, Bytes s) {
            const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
            if (!sof) return false;
            if (s.size() < 5) fail("broken JPEG: short frame header");
            info.height = int(be16(s, 1));
            info.width = int(be16(s, 3));
            return true;
        });
        if (info.width == 0) fail("broken JPEG: no frame header before the image data");
    } else if (starts_with(b, "RIFF") && starts_with(b, "WEBP", 8)) {
        info.format = ImageFormat::WebP;
        walk_webp_chunks(b, [&](const std::string& fourcc, Bytes p) {
            if (fourcc == "VP8X" && p.size() >= 10) {
                info.width = int(le24(p, 4)) + 1;
                info.height = int(le24(p, 7)) + 1;
            } else if (fourcc == "VP8L" && p.size() >= 5 && p[0] == 0x2F) {
                const uint32_t bits = le32(p, 1);
                info.width = int(bits & 0x3FFF) + 1;
                info.height = int((bits >> 14) & 0x3FFF) + 1;
            } else if (fourcc == "VP8 " && p.size() >= 10 && p[3] == 0x9D && p[4] == 0x01 && p[5] == 0x2A) {
                info.width = int(le16(p, 6) & 0x3FFF);
                info.height = int(le16(p, 8) & 0x3FFF);
            } else {
                return false;
            }
            return true;
        });
        if (info.width == 0) fail("broken WebP: no image header");
    } else if (starts_with(b, "BM")) {
        if (b.size() < 26) fail("truncated BMP: no image header");
        const uint32_t header = le32(b, 14);
        if (header == 12) {
            info = {ImageFormat::Bmp, int(le16(b, 18)), int(le16(b, 20))};
        } else {
            if (b.size() < 26) fail("truncated BMP: no image header");
            const auto h = int32_t(le32(b, 22));
            info = {ImageFormat::Bmp, int(int32_t(le32(b, 18))), h == INT32_MIN ? 0 : std::abs(h)};
        }
    } else if (starts_with(b, "GIF87a") || starts_with(b, "GIF89a")) {
        if (b.size() < 10) fail("truncated GIF: no screen descriptor");
        info = {ImageFormat::Gif, int(le16(b, 6)), int(le16(b, 8))};
    } else {
        fail("not an image Lumen can read (PNG, JPEG, WebP, BMP or GIF)");
    }
    if (info.width <= 0 || info.height <= 0)
        fail(std::string("broken ") + format_name(info.format) + ": it says its size is " + std::to_string(info.width) +
             "x" + std::to_string(info.height));
    return info;
}

RgbImage RgbImage::crop(int x, int y, int w, int h) const {
    if (x < 0 || y < 0 || w < 0 || h < 0 || x + w > width || y + h > height) throw Error("crop box outside the image");
    RgbImage out(w, h);
    for (int r = 0; r < h; ++r) std::memcpy(out.row(r), row(y + r) + size_t(x) * 3, size_t(w) * 3);
    return out;
}

// The XMP packet of a PNG text chunk keyed XML:com.adobe.xmp (tEXt, or iTXt not compressed), the
// text PIL keeps for it; empty for any other chunk.
Bytes png_xmp_text(Bytes type, Bytes data) {
    static const char kKey[] = "XML:com.adobe.xmp";  // with its NUL
    if (data.size() < sizeof kKey || std::memcmp(data.data(), kKey, sizeof kKey) != 0) return {};
    if (starts_with(type, "tEXt")) return data.subspan(sizeof kKey);
    if (!starts_with(type, "iTXt") || data.size() <= sizeof kKey + 1 || data[sizeof kKey] != 0) return {};
    // After the compression flag and method: the language tag and the translated keyword, each NUL-ended.
    size_t p = sizeof kKey + 2;
    for (int field = 0; field < 2 && p < data.size(); ++field) {
        while (p < data.size() && data[p] != 0) ++p;
        ++p;
    }
    return p <= data.size() ? data.subspan(p) : Bytes{};
}

int exif_orientation(Bytes b, ImageFormat format) {
    // As PIL's exif_transpose: the EXIF orientation tag, else (no tag at all) the XMP packet's.
    int exif = 0, xmp = 0;
    try {
        if (format == ImageFormat::Jpeg) {
            walk_jpeg_segments(b, [&](uint8_t marker, Bytes s) {
                if (marker != 0xE1) return false;
                if (starts_with(s, "Exif") && exif == 0) exif = tiff_orientation(s);
                static const char kXmp[] = "http://ns.adobe.com/xap/1.0/";  // then a NUL, then the packet
                if (starts_with(s, kXmp) && xmp == 0) xmp = xmp_orientation(s.subspan(std::min(sizeof kXmp, s.size())));
                return false;
            });
        } else if (format == ImageFormat::Png) {
            size_t at = 8;
            while (at + 12 <= b.size()) {
                const size_t length = be32(b, at);
                if (at + 12 + length > b.size()) break;
                const Bytes data = b.subspan(at + 8, length);
                if (starts_with(b, "eXIf", at + 4) && exif == 0) exif = tiff_orientation(data);
                if (xmp == 0) xmp = xmp_orientation(png_xmp_text(b.subspan(at + 4, 4), data));
                at += 12 + length;
            }
        } else if (format == ImageFormat::WebP) {
            walk_webp_chunks(b, [&](const std::string& fourcc, Bytes p) {
                if (fourcc == "EXIF" && exif == 0) exif = tiff_orientation(p);
                if (fourcc == "XMP " && xmp == 0) xmp = xmp_orientation(p);
                return false;
            });
        }
    } catch (const Error&) {
        return 1;  // a broken header is reported by the decoder, not here
    }
    if (exif != 0) return exif;
    return xmp >= 1 && xmp <= 8 ? xmp : 1;
}

RgbImage apply_orientation(RgbImage in, int orientation) {
    if (orientation <= 1 || orientation > 8) return in;
    const int W = in.width, H = in.height;
    const bool swap = orientation >= 5;
    RgbImage out(swap ? H : W, swap ? W : H);
    for (int y = 0; y < out.height; ++y) {
        for (int x = 0; x < out.width; ++x) {
            int sx = x, sy = y;
            switch (orientation) {
            case 2: sx = W - 1 - x; break;                      // mirror
            case 3: sx = W - 1 - x, sy = H - 1 - y; break;      // rotate 180
            case 4: sy = H - 1 - y; break;                      // flip
            case 5: sx = y, sy = x; break;                      // transpose
            case 6: sx = y, sy = H - 1 - x; break;              // rotate 90 clockwise
            case 7: sx = W - 1 - y, sy = H - 1 - x; break;      // transverse
            case 8: sx = W - 1 - y, sy = x; break;              // rotate 90 counter-clockwise
            }
            std::memcpy(out.row(y) + 3 * size_t(x), in.row(sy) + 3 * size_t(sx), 3);
        }
    }
    return out;
}

RgbImage decode_image(Bytes b, const DecodeLimits& limits) {
    const ImageInfo info = probe_image(b);
    const int64_t pixels = int64_t(info.width) * info.height;
    if (pixels > limits.max_pixels)
        fail("image is " + std::to_string(info.width) + "x" + std::to_string(info.height) + " pixels (limit " +
             std::to_string(limits.max_pixels / 1'000'000) + " MP)");
    if (info.format == ImageFormat::Jpeg && !jpeg_has_end(b)) fail("truncated JPEG: the image data is cut off");
    if (info.format == ImageFormat::Png) check_png_chunks(b);
    if (info.format == ImageFormat::Gif) return decode_gif(b, limits.max_pixels);

    // 8-bit colour (most files) is decoded straight into the image's own rows and converted there;
    // OpenCV allocates rows of its own for any other kind of sample.
    RgbImage image(info.width, info.height);
    cv::Mat decoded(info.height, info.width, CV_8UC3, image.pixels.data());
    try {
        const cv::Mat raw(1, int(std::min<size_t>(b.size(), INT32_MAX)), CV_8UC1, const_cast<uint8_t*>(b.data()));
        // Unchanged: no conversion and no rotation by OpenCV; both are done here as PIL does them.
        if (cv::imdecode(raw, cv::IMREAD_UNCHANGED, &decoded).empty()) decoded = cv::Mat();
    } catch (const cv::Exception& e) {
        fail(std::string("broken ") + format_name(info.format) + ": " + e.err);
    }
    if (decoded.empty()) fail(std::string("broken ") + format_name(info.format) + ": the image data cannot be decoded");
    if (decoded.cols != info.width || decoded.rows != info.height)
        fail(std::string("broken ") + format_name(info.format) + ": the decoded size differs from the header's");
    to_rgb(decoded, image);
    return apply_orientation(std::move(image), exif_orientation(b, info.format));
}

std::vector<uint8_t> load_image_bytes(const std::filesystem::path& path) {
    const auto bytes = read_text_file(path, kImageFile);
    if (!bytes) throw Error(path.string() + ": no such file");
    return std::vector<uint8_t>(bytes->begin(), bytes->end());
}

RgbImage load_image(const std::filesystem::path& path, const DecodeLimits& limits) {
    const std::vector<uint8_t> bytes = load_image_bytes(path);
    try {
        return decode_image(bytes, limits);
    } catch (const Error& e) {
        throw Error(path.filename().string() + ": " + e.what());
    }
}

}  // namespace lumen::vision
