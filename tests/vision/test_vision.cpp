// The vision path on the CPU: decoding (real photos, crafted files for each conversion rule, bad
// files), preprocessing against the reference processors' pixels (goldens from transformers and
// PIL), and the tiny vision-language checkpoints end to end against transformers: prompt ids,
// greedy ids and image embeddings.
#include <QCryptographicHash>
#include <QtTest>
#include <array>
#include <cmath>
#include <fstream>
#include <random>
#include <set>
#include <nlohmann/json.hpp>

#include "engine/model/chat_template_choice.h"
#include "engine/text/chat_template.h"
#include "engine/util/error.h"
#include "engine/model/model_config.h"
#include "engine/util/text_file.h"
#include "engine/text/tokenizer.h"
#include "tests/support/engine_runner.h"
#include "tests/support/test_support.h"
#include "tests/support/tiny_models.h"
#include "vision/encoder.h"
#include "vision/image.h"
#include "vision/preprocess.h"
#include "vision/prompt.h"
#include "vision/resize.h"

using namespace lumen;
using namespace lumen::test;
using namespace lumen::vision;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path golden_dir() { return fs::path(LUMEN_SOURCE_DIR) / "tests/data/goldens/vision"; }

std::string sha256(const void* data, std::size_t n) {
    return QCryptographicHash::hash(QByteArrayView(static_cast<const char*>(data), qsizetype(n)), QCryptographicHash::Sha256)
        .toHex()
        .toStdString();
}

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }
std::vector<uint8_t> bytes_of(const RgbImage& im) { return {im.pixels.begin(), im.pixels.end()}; }
std::vector<uint8_t> read_bytes(const fs::path& p) { return bytes_of(*read_test_file(p)); }

// The lowest cosine similarity between the two encoders' embeddings of the same image, row by row.
double lowest_cosine(Backend& backend, VisionEncoder& a, VisionEncoder& b, const ImagePixels& px) {
    std::vector<float> x, y;
    const Tensor ex = a.encode(px);
    x.resize(std::size_t(ex.rows * ex.cols));
    backend.read(ex, x);
    const Tensor ey = b.encode(px);
    y.resize(std::size_t(ey.rows * ey.cols));
    backend.read(ey, y);
    double lowest = 1;
    for (int64_t r = 0; r < ex.rows; ++r) {
        double dot = 0, nx = 0, ny = 0;
        for (int64_t k = r * ex.cols; k < (r + 1) * ex.cols; ++k)
            dot += double(x[k]) * y[k], nx += double(x[k]) * x[k], ny += double(y[k]) * y[k];
        lowest = std::min(lowest, dot / std::sqrt(nx * ny));
    }
    return lowest;
}

// --- Crafted files -------------------------------------------------------------------------

void be32(std::string& s, uint32_t v) {
    for (int i = 3; i >= 0; --i) s += char((v >> (8 * i)) & 0xFF);
}
void le16(std::string& s, uint32_t v) {
    s += char(v & 0xFF);
    s += char((v >> 8) & 0xFF);
}

uint32_t crc32(const std::string& data) {
    uint32_t c = 0xFFFFFFFFu;
    for (unsigned char b : data) {
        c ^= b;
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

std::string chunk(const std::string& type, const std::string& data) {
    std::string out;
    be32(out, uint32_t(data.size()));
    out += type + data;
    be32(out, crc32(type + data));
    return out;
}

// A PNG with uncompressed (stored) deflate blocks; `rows` are the raw scanlines without filter bytes.
std::string png(int w, int h, int depth, int color, const std::vector<std::string>& rows, const std::vector<std::pair<std::string, std::string>>& extra = {}) {
    std::string raw;
    for (const auto& r : rows) raw += '\0' + r;
    std::string z = "\x78\x01";
    for (std::size_t at = 0; at < raw.size() || at == 0; at += 65535) {
        const std::size_t n = std::min<std::size_t>(65535, raw.size() - at);
        z += char(at + n >= raw.size() ? 1 : 0);
        le16(z, uint32_t(n));
        le16(z, uint32_t(~n & 0xFFFF));
        z += raw.substr(at, n);
        if (raw.empty()) break;
    }
    uint32_t a = 1, b = 0;
    for (unsigned char c : raw) a = (a + c) % 65521, b = (b + a) % 65521;
    be32(z, (b << 16) | a);
    std::string ihdr;
    be32(ihdr, uint32_t(w));
    be32(ihdr, uint32_t(h));
    ihdr += char(depth);
    ihdr += char(color);
    ihdr += std::string(3, '\0');
    std::string out = "\x89PNG\r\n\x1a\n" + chunk("IHDR", ihdr);
    for (const auto& [type, data] : extra) out += chunk(type, data);
    out += chunk("IDAT", z) + chunk("IEND", "");
    return out;
}

// A big-endian TIFF block with one IFD entry: the orientation.
std::string exif_orientation_block(int orientation) {
    std::string t = "MM";
    t += '\0';
    t += '*';
    be32(t, 8);
    t += '\0';
    t += '\1';
    t += "\x01\x12";  // tag 0x0112
    t += '\0';
    t += '\3';        // SHORT
    be32(t, 1);
    t += '\0';
    t += char(orientation);
    t += std::string(2, '\0');
    be32(t, 0);
    return t;
}

// A 3x2 RGB image whose pixels are A B C / D E F (each pixel one grey level).
const char kPixels[] = "ABCDEF";
std::string rgb_3x2_png(const std::vector<std::pair<std::string, std::string>>& extra = {}) {
    std::vector<std::string> rows(2);
    for (int y = 0; y < 2; ++y)
        for (int x = 0; x < 3; ++x) rows[std::size_t(y)] += std::string(3, kPixels[y * 3 + x]);
    return png(3, 2, 8, 2, rows, extra);
}
// The image's rows as letters.
std::string letters(const RgbImage& im) {
    std::string s;
    for (int y = 0; y < im.height; ++y) {
        if (y) s += '/';
        for (int x = 0; x < im.width; ++x) s += char(im.row(y)[3 * x]);
    }
    return s;
}

// A GIF whose LZW stream clears before every pixel (so code size never grows): a 4-colour
// global table, an optional transparent index, and one frame at (left, top) of w x h.
std::string gif(int screen_w, int screen_h, int left, int top, int w, int h, const std::vector<int>& indices, int transparent,
                bool interlaced = false) {
    std::string g = "GIF89a";
    le16(g, uint32_t(screen_w));
    le16(g, uint32_t(screen_h));
    g += char(0x81);  // global table of 4 entries
    g += char(3);     // background index (PIL ignores it)
    g += '\0';
    g += std::string("\x10\x20\x30\x40\x50\x60\x70\x80\x90\xA0\xB0\xC0", 12);
    if (transparent >= 0) {
        g += "\x21\xF9\x04\x01";
        le16(g, 0);
        g += char(transparent);
        g += '\0';
    }
    g += ',';
    le16(g, uint32_t(left));
    le16(g, uint32_t(top));
    le16(g, uint32_t(w));
    le16(g, uint32_t(h));
    g += interlaced ? char(0x40) : '\0';
    g += char(2);  // LZW minimum code size
    // Codes of 3 bits: clear (4), pixel, clear, pixel, ..., end (5).
    std::vector<int> codes;
    for (int i : indices) codes.push_back(4), codes.push_back(i);
    codes.push_back(5);
    std::string data;
    uint32_t buffer = 0;
    int bits = 0;
    for (int c : codes) {
        buffer |= uint32_t(c) << bits;
        bits += 3;
        while (bits >= 8) data += char(buffer & 0xFF), buffer >>= 8, bits -= 8;
    }
    if (bits) data += char(buffer & 0xFF);
    for (std::size_t at = 0; at < data.size(); at += 255) {
        const std::size_t n = std::min<std::size_t>(255, data.size() - at);
        g += char(n);
        g += data.substr(at, n);
    }
    g += '\0';
    g += ';';
    return g;
}

std::string error_of(const std::string& bytes, DecodeLimits limits = {}) {
    try {
        decode_image(bytes_of(bytes), limits);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

// --- Preprocessing summaries as the goldens store them --------------------------------------

std::string squares_hash(const std::vector<RgbImage>& squares) {
    std::string all;
    for (const auto& s : squares) all.append(reinterpret_cast<const char*>(s.pixels.data()), s.pixels.size());
    return sha256(all.data(), all.size());
}

std::string values_hash(const std::vector<float>& v) { return sha256(v.data(), v.size() * sizeof(float)); }

Preprocessing clip_preprocessing(bool pad) {
    Preprocessing p;
    p.mode = pad ? Preprocessing::Mode::PadToSquare : Preprocessing::Mode::ShortestEdgeCrop;
    p.size = p.shortest_edge = 336;
    p.mean = {0.48145466f, 0.4578275f, 0.40821073f};
    p.std = {0.26862954f, 0.26130258f, 0.27577711f};
    return p;
}

Preprocessing internvl_preprocessing(int max_tiles) {
    Preprocessing p;
    p.mode = Preprocessing::Mode::Tiles;
    p.size = 448;
    p.min_tiles = 1;
    p.max_tiles = max_tiles;
    p.thumbnail = true;
    p.mean = {0.485f, 0.456f, 0.406f};
    p.std = {0.229f, 0.224f, 0.225f};
    return p;
}

RgbImage photo(const fs::path& data, const json& c) {
    RgbImage im = load_image(data / "images" / c["file"].get<std::string>());
    if (c.contains("crop") && !c["crop"].is_null()) {
        const auto& b = c["crop"];
        im = im.crop(b[0], b[1], b[2], b[3]);
    }
    return im;
}

double max_relative_error(const std::vector<float>& got, const std::vector<double>& want) {
    double max_abs = 0, max_err = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
        max_abs = std::max(max_abs, std::fabs(want[i]));
        max_err = std::max(max_err, std::fabs(double(got[i]) - want[i]));
    }
    return max_err / std::max(max_abs, 1e-30);
}

}  // namespace

class TestVision : public QObject {
    Q_OBJECT
private slots:
    void refusesBadImages() {
        QVERIFY(QString::fromStdString(error_of("")).contains("empty"));
        QVERIFY(QString::fromStdString(error_of("Just some text, not an image at all.")).contains("not an image"));
        // A header that promises 30000 x 30000 pixels: refused before any decoding.
        std::string ihdr;
        be32(ihdr, 30000);
        be32(ihdr, 30000);
        ihdr += std::string("\x08\x02\0\0\0", 5);
        const std::string huge = "\x89PNG\r\n\x1a\n" + chunk("IHDR", ihdr);
        QCOMPARE(QString::fromStdString(error_of(huge)), QString("image is 30000x30000 pixels (limit 50 MP)"));
        QVERIFY(QString::fromStdString(error_of(huge, {2'000'000'000})).contains("truncated PNG"));
        const std::string good = rgb_3x2_png();
        for (std::size_t cut : {std::size_t(10), std::size_t(30), good.size() - 20})
            QVERIFY2(QString::fromStdString(error_of(good.substr(0, cut))).contains("PNG"), qPrintable(QString::number(cut)));
        // A zero-sized image, and a GIF cut inside its pixels.
        QVERIFY(QString::fromStdString(error_of(png(0, 2, 8, 2, {}))).contains("size is 0x2"));
        const std::string g = gif(2, 2, 0, 0, 2, 2, {0, 1, 2, 3}, -1);
        QVERIFY(QString::fromStdString(error_of(g.substr(0, g.size() - 5))).contains("GIF"));
        QVERIFY(QString::fromStdString(error_of("GIF89a\x02\0")).contains("GIF"));
    }

    void refusesTruncatedJpeg() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        const std::string jpeg = *read_test_file(data / "images" / "llava_waterview.jpg");
        QVERIFY(error_of(jpeg).empty());
        for (std::size_t cut : {std::size_t(3), std::size_t(200), jpeg.size() / 2, jpeg.size() - 2})
            QVERIFY2(QString::fromStdString(error_of(jpeg.substr(0, cut))).contains("JPEG"), qPrintable(QString::number(cut)));
    }

    void convertsAsPilDoes() {
        QCOMPARE(letters(decode_image(bytes_of(rgb_3x2_png()))), std::string("ABC/DEF"));
        // Grey repeated; alpha dropped without compositing.
        const RgbImage grey = decode_image(bytes_of(png(2, 1, 8, 0, {"\x10\xF0"})));
        QCOMPARE(bytes_of(grey), (std::vector<uint8_t>{0x10, 0x10, 0x10, 0xF0, 0xF0, 0xF0}));
        const RgbImage rgba = decode_image(bytes_of(png(1, 1, 8, 6, {std::string("\x11\x22\x33\x00", 4)})));
        QCOMPARE(bytes_of(rgba), (std::vector<uint8_t>{0x11, 0x22, 0x33}));
        // 16-bit colour keeps the high byte; 16-bit grey (PIL's I;16) is clipped at 255.
        const RgbImage wide = decode_image(bytes_of(png(1, 1, 16, 2, {std::string("\x12\x34\xAB\xCD\x00\xFF", 6)})));
        QCOMPARE(bytes_of(wide), (std::vector<uint8_t>{0x12, 0xAB, 0x00}));
        const RgbImage grey16 = decode_image(bytes_of(png(3, 1, 16, 0, {std::string("\x00\x7F\x00\xFF\x01\x00", 6)})));
        QCOMPARE(bytes_of(grey16), (std::vector<uint8_t>{0x7F, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}));
        // A palette image through its colours.
        const RgbImage pal = decode_image(bytes_of(png(2, 1, 8, 3, {std::string("\x01\x00", 2)}, {{"PLTE", "\x01\x02\x03\x04\x05\x06"}})));
        QCOMPARE(bytes_of(pal), (std::vector<uint8_t>{4, 5, 6, 1, 2, 3}));
    }

    void appliesExifOrientation() {
        const std::map<int, std::string> expected{{1, "ABC/DEF"}, {2, "CBA/FED"}, {3, "FED/CBA"}, {4, "DEF/ABC"},
                                                  {5, "AD/BE/CF"}, {6, "DA/EB/FC"}, {7, "FC/EB/DA"}, {8, "CF/BE/AD"}};
        for (const auto& [orientation, want] : expected) {
            const std::string file = rgb_3x2_png({{"eXIf", exif_orientation_block(orientation)}});
            QCOMPARE(exif_orientation(bytes_of(file), ImageFormat::Png), orientation);
            QCOMPARE(letters(decode_image(bytes_of(file))), want);
        }
    }

    // Orientation written in XMP metadata (PNG iTXt and tEXt, a JPEG APP1 segment, a WebP "XMP "
    // chunk), alone or beside EXIF: each as PIL's exif_transpose turned it
    // (tests/reference/make_xmp_goldens.py).
    void appliesXmpOrientationAsPil() {
        const fs::path dir = fs::path(LUMEN_SOURCE_DIR) / "tests/data/goldens/vision/xmp";
        const json golden = json::parse(*read_test_file(dir / "xmp.json"));
        QCOMPARE(golden.size(), std::size_t(6));
        for (const auto& [name, orientation] : golden.items()) {
            const std::vector<uint8_t> bytes = read_bytes(dir / name);
            QVERIFY2(exif_orientation(bytes, probe_image(bytes).format) == orientation.get<int>(), name.c_str());
            const RgbImage image = decode_image(bytes);
            const bool turned = orientation.get<int>() >= 5;
            QCOMPARE(image.width, turned ? 8 : 12);
            QCOMPARE(image.height, turned ? 12 : 8);
        }
    }

    void decodesGifFirstFrames() {
        // Colours of indices 0-3: (10 20 30) (40 50 60) (70 80 90) (A0 B0 C0).
        const RgbImage plain = decode_image(bytes_of(gif(2, 2, 0, 0, 2, 2, {0, 1, 2, 3}, -1)));
        QCOMPARE(bytes_of(plain),
                 (std::vector<uint8_t>{0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0}));
        // A frame smaller than the screen: the rest is the transparent index's colour (PIL fills
        // with it, and keeps the colour of transparent pixels); without transparency, index 0.
        const RgbImage framed = decode_image(bytes_of(gif(3, 1, 1, 0, 1, 1, {1}, 2)));
        QCOMPARE(bytes_of(framed), (std::vector<uint8_t>{0x70, 0x80, 0x90, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90}));
        const RgbImage unframed = decode_image(bytes_of(gif(2, 1, 1, 0, 1, 1, {3}, -1)));
        QCOMPARE(bytes_of(unframed), (std::vector<uint8_t>{0x10, 0x20, 0x30, 0xA0, 0xB0, 0xC0}));
        // Interlaced rows come in the order 0, 4 (every 8th from 0, then from 4), 2, then 1 and 3.
        const RgbImage interlaced = decode_image(bytes_of(gif(1, 5, 0, 0, 1, 5, {0, 1, 2, 3, 0}, -1, true)));
        QCOMPARE(bytes_of(interlaced), (std::vector<uint8_t>{0x10, 0x20, 0x30, 0xA0, 0xB0, 0xC0, 0x70, 0x80, 0x90, 0x10, 0x20,
                                                             0x30, 0x40, 0x50, 0x60}));
    }

    void resizesLikePil() {
        // Uniform in, uniform out, at any scale (weights sum to one); identity is a copy.
        RgbImage flat(37, 23);
        std::fill(flat.pixels.begin(), flat.pixels.end(), uint8_t(77));
        for (auto [w, h] : {std::pair{10, 5}, {100, 61}, {37, 50}, {1, 1}}) {
            const RgbImage r = resize_bicubic(flat, w, h);
            QCOMPARE(r.width, w);
            QVERIFY(std::all_of(r.pixels.begin(), r.pixels.end(), [](uint8_t v) { return v == 77; }));
        }
        QCOMPARE(resize_bicubic(flat, 37, 23).pixels, flat.pixels);
        QVERIFY_THROWS_EXCEPTION(Error, resize_bicubic(flat, 0, 5));
    }

    void contentHashesTellFilesApart() {
        // Every single-bit change, in the 32-byte blocks and in the tail, and a longer file with
        // the same prefix give another hash; equal bytes give the same one.
        std::vector<uint8_t> bytes(1000);
        std::mt19937 rng(3);
        for (auto& b : bytes) b = uint8_t(rng());
        const uint64_t base = content_hash(bytes);
        QCOMPARE(content_hash(std::vector<uint8_t>(bytes)), base);
        std::set<uint64_t> seen{base};
        for (std::size_t at : {std::size_t(0), std::size_t(7), std::size_t(31), std::size_t(500), std::size_t(991), std::size_t(999)})
            for (int bit = 0; bit < 8; ++bit) {
                std::vector<uint8_t> changed = bytes;
                changed[at] ^= uint8_t(1 << bit);
                QVERIFY(seen.insert(content_hash(changed)).second);
            }
        std::vector<uint8_t> longer = bytes;
        longer.push_back(0);
        QVERIFY(seen.insert(content_hash(longer)).second);
        QVERIFY(seen.insert(content_hash(std::span(bytes).first(999))).second);
    }

    void resizeVectorLoopsMatchPortableOnes() {
        // Noise with many saturated bytes (the sums overshoot and clip), shrinking and enlarging,
        // rows that end mid-vector, one-pixel images: the vector loops give the portable loops' bytes.
        std::mt19937 rng(7);
        const std::array<int, 4> sizes[] = {{1920, 1080, 1792, 896}, {1920, 1080, 448, 448}, {640, 480, 896, 448}, {1, 1, 5, 7},
                                            {3, 2, 1, 1},           {37, 23, 100, 61},     {1000, 3, 11, 2},    {5, 1000, 17, 33},
                                            {333, 129, 448, 448},   {2, 2, 3, 3},          {7, 1, 2, 1}};
        for (const auto& [w0, h0, w1, h1] : sizes) {
            RgbImage in(w0, h0);
            for (auto& v : in.pixels) v = rng() % 3 == 0 ? uint8_t(255 * (rng() % 2)) : uint8_t(rng());
            const RgbImage fast = resize_bicubic(in, w1, h1), portable = resize_bicubic(in, w1, h1, ResizeKernels::Portable);
            QVERIFY2(bytes_of(fast) == bytes_of(portable), qPrintable(QString("%1x%2 to %3x%4").arg(w0).arg(h0).arg(w1).arg(h1)));
        }
    }

    void tileGrids() {
        QCOMPARE(tile_grid(448, 448, 1, 12, 448), (std::pair{1, 1}));
        QCOMPARE(tile_grid(896, 448, 1, 12, 448), (std::pair{2, 1}));
        // A square image larger than half of the 2x2 canvas takes the bigger grid on the tie.
        QCOMPARE(tile_grid(1000, 1000, 1, 6, 448), (std::pair{2, 2}));
        QCOMPARE(tile_grid(1920, 1080, 1, 12, 448), (std::pair{4, 2}));
    }

    void pixelsMatchReferenceProcessors() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        const auto text = read_test_file(golden_dir() / "pixels.json");
        QVERIFY2(text, "tests/data/goldens/vision/pixels.json is missing; run tests/reference/make_vision_goldens.py");
        const json goldens = json::parse(*text);
        int checked = 0, fast_diff = 0;
        for (const auto& g : goldens["cases"]) {
            const QString where = QString::fromStdString(g["file"].get<std::string>() + " " + g["crop"].dump());
            const RgbImage im = photo(data, g);
            QCOMPARE(im.width, g["size"][0].get<int>());
            QCOMPARE(im.height, g["size"][1].get<int>());
            QVERIFY2(sha256(im.pixels.data(), im.pixels.size()) == g["sha256_rgb"], qPrintable("decoded pixels differ: " + where));
            const std::pair<const char*, Preprocessing> kinds[] = {
                {"clip", clip_preprocessing(false)}, {"llava_pad", clip_preprocessing(true)}, {"internvl", internvl_preprocessing(12)}};
            for (const auto& [kind, prep] : kinds) {
                const json& want = g[kind];
                const auto squares = preprocess_squares(im, prep);
                QVERIFY2(int(squares.size()) == want["tiles"].get<int>(), qPrintable(QString(kind) + " tiles: " + where));
                QVERIFY2(squares_hash(squares) == want["sha256_u8"], qPrintable(QString(kind) + " pixels differ: " + where));
                QVERIFY2(values_hash(normalize(to_planes(squares), prep)) == want["sha256_f32"],
                         qPrintable(QString(kind) + " values differ: " + where));
                // transformers 5's default torchvision backend is not PIL-exact itself: reported.
                if (want.contains("fast_max_diff") && !want["fast_max_diff"].is_null())
                    fast_diff = std::max(fast_diff, want["fast_max_diff"].get<int>());
                ++checked;
            }
            const auto grid = tile_grid(im.width, im.height, 1, 12, 448);
            QCOMPARE(grid.first, g["internvl"]["grid"][0].get<int>());
            QCOMPARE(grid.second, g["internvl"]["grid"][1].get<int>());
            QVERIFY(g["internvl"]["equals_dynamic_preprocess"].get<bool>());
        }
        QVERIFY(checked >= 30);
        qInfo("%d preprocessings equal PIL's bit for bit; transformers' torchvision backend is up to %d/255 from them", checked, fast_diff);
    }

    // The encoder's own backend operations on the CPU (the GPU suite compares CUDA against these).
    void encoderOpsOnTheCpu() {
        auto b = make_cpu_backend();
        std::vector<Buffer> kept;  // the memory of the views below
        auto own = [&](Buffer buffer) -> Tensor {
            kept.push_back(std::move(buffer));
            return kept.back();
        };
        // Two 4x4 images of three channels in 2x2 patches: rows of 12 values padded to 16, each
        // sample looked up in its channel's levels.
        const int64_t images = 2, channels = 3, size = 4, patch = 2;
        std::vector<uint8_t> samples(std::size_t(images * channels * size * size));
        for (std::size_t i = 0; i < samples.size(); ++i) samples[i] = uint8_t(i * 5);
        std::vector<float> level_values(std::size_t(channels * 256));
        for (std::size_t i = 0; i < level_values.size(); ++i) level_values[i] = float(i) * 0.5f - 100.0f;
        Tensor planes = own(b->activation(images * channels * size, size, DType::U8));
        b->write_u8(planes, samples);
        const Tensor levels = own(b->weight(level_values.data(), DType::F32, channels, 256));
        Tensor rows = own(b->activation(images * 4, 16, DType::F32));
        b->patch_rows(planes, levels, patch, rows);
        std::vector<float> got(std::size_t(rows.rows * rows.cols));
        b->read(rows, got);
        for (int64_t r = 0; r < rows.rows; ++r)
            for (int64_t c = 0; c < rows.cols; ++c) {
                const int64_t t = r / 4, y = r % 4 / 2, x = r % 2, ch = c / 4, ky = c % 4 / 2, kx = c % 2;
                const std::size_t at = std::size_t(((t * channels + ch) * size + y * patch + ky) * size + x * patch + kx);
                const float want = c < 12 ? level_values[std::size_t(ch * 256 + samples[at])] : 0.0f;
                QCOMPARE(got[std::size_t(r * rows.cols + c)], want);
            }
        // Float planes, or levels that are not 256 a channel, are refused.
        Tensor float_planes = own(b->activation(images * channels * size, size, DType::F32));
        QVERIFY_THROWS_EXCEPTION(Error, b->patch_rows(float_planes, levels, patch, rows));
        QVERIFY_THROWS_EXCEPTION(Error, b->patch_rows(planes, own(b->weight(level_values.data(), DType::F32, channels * 2, 128)), patch, rows));

        // Row orders are checked when made; a gather follows them.
        QVERIFY_THROWS_EXCEPTION(Error, b->indices(std::vector<int32_t>{0, 8}, 8));
        Tensor order = own(b->indices(std::vector<int32_t>{7, 0, 3}, 8));
        Tensor gathered = own(b->activation(3, 16, DType::F32));
        b->gather_rows(rows, order, gathered);
        std::vector<float> g(48);
        b->read(gathered, g);
        for (int64_t i = 0; i < 16; ++i) QCOMPARE(g[std::size_t(16 + i)], got[std::size_t(i)]);
        for (int64_t i = 0; i < 16; ++i) QCOMPARE(g[std::size_t(i)], got[std::size_t(7 * 16 + i)]);

        // The residual add with the norm after it equals the two operations.
        std::vector<float> w(16), bias(16), scale(16), x0(48), d(48);
        for (std::size_t i = 0; i < 16; ++i) w[i] = 1.0f + 0.1f * float(i), bias[i] = 0.05f * float(i), scale[i] = 0.5f;
        for (std::size_t i = 0; i < 48; ++i) x0[i] = std::sin(float(i)), d[i] = std::cos(float(i));
        const Tensor wt = own(b->weight(w.data(), DType::F32, 1, 16)), bt = own(b->weight(bias.data(), DType::F32, 1, 16)),
                     st = own(b->weight(scale.data(), DType::F32, 1, 16));
        Tensor x1 = own(b->activation(3, 16, DType::F32)), x2 = own(b->activation(3, 16, DType::F32)), delta = own(b->activation(3, 16, DType::F32));
        Tensor fused = own(b->activation(3, 16, DType::F32)), separate = own(b->activation(3, 16, DType::F32));
        b->write(x1, x0);
        b->write(x2, x0);
        b->write(delta, d);
        b->add_norm(x1, delta, &st, wt, &bt, 1e-6f, false, fused);
        b->add(x2, delta, &st);
        b->layer_norm(x2, wt, &bt, 1e-6f, separate);
        std::vector<float> f(48), sep(48), s1(48), s2(48);
        b->read(fused, f);
        b->read(separate, sep);
        b->read(x1, s1);
        b->read(x2, s2);
        QCOMPARE(f, sep);
        QCOMPARE(s1, s2);
    }

    // Tiles of another size than the tower's config are taken with resampled position embeddings
    // (the goldens' internvl_hf_positions); sizes off the patch grid are refused by name.
    void imageSizesAgainstThePatchGrid() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        const TinyVlmSpec spec = load_tiny_vlm_spec();
        for (const TinyVlm& m : spec.models) {
            if (m.name != "internvl_hf_positions") continue;
            LUMEN_REQUIRE_TOKENIZER(data, m.tokenizer);
            QTemporaryDir dir;
            build_tiny_vlm(spec, m, data / "tokenizers", path_of(dir));
            const ModelConfig config = load_model_config(path_of(dir));
            const VisionConfig vc = load_vision_config(path_of(dir), config, nullptr);
            QCOMPARE(vc.image_size, int64_t(448));
            QCOMPARE(vc.position_grid, int64_t(16));
            QCOMPARE(vc.tokens_per_tile, int64_t(256));
            json pre = m.files["preprocessor_config.json"];
            pre["size"] = {{"height", 450}, {"width", 450}};
            std::ofstream(path_of(dir) / "preprocessor_config.json") << pre.dump();
            try {
                load_vision_config(path_of(dir), config, nullptr);
                QFAIL("a 450-pixel size was accepted");
            } catch (const Error& e) {
                QVERIFY2(QString(e.what()).contains("450 is not an even number of 14-pixel patches"), e.what());
            }
            return;
        }
        QFAIL("tests/data/tiny_vlms.json has no internvl_hf_positions model");
    }

    void tinyVlmsMatchTransformers() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        const auto text = read_test_file(golden_dir() / "vlm.json");
        QVERIFY2(text, "tests/data/goldens/vision/vlm.json is missing; run tests/reference/make_vision_goldens.py");
        const json goldens = json::parse(*text);
        const TinyVlmSpec spec = load_tiny_vlm_spec();
        for (const TinyVlm& m : spec.models) {
            LUMEN_REQUIRE_TOKENIZER(data, m.tokenizer);
            QTemporaryDir dir;
            const auto sums = build_tiny_vlm(spec, m, data / "tokenizers", path_of(dir));
            const json& g = goldens["models"][m.name];
            for (const auto& [name, sum] : sums) QCOMPARE(std::to_string(sum), g["checksums"][name].get<std::string>());

            EngineOptions options;
            options.image_encoder = make_image_encoder;
            options.cache_max_entry_count = 64;
            EngineRunner runner(path_of(dir), options);
            const ModelConfig& config = runner.engine().model_config();
            const Tokenizer& tokenizer = runner.engine().tokenizer();
            const VisionConfig vc = load_vision_config(path_of(dir), config, &tokenizer);
            const ChatTemplate tmpl = chat_template_for(config, tokenizer);
            auto backend = make_cpu_backend();
            VisionEncoder encoder(path_of(dir), vc, *backend);
            for (std::size_t i = 0; i < m.cases.size(); ++i) {
                const TinyVlmCase& c = m.cases[i];
                const json& want = g["cases"][i];
                const QString where = QString::fromStdString(m.name + " case " + std::to_string(i));
                std::vector<ChatMessage> messages;
                for (const auto& msg : c.messages) messages.push_back({msg["role"], msg["text"], msg["images"]});
                const std::string rendered = tmpl.render(messages);
                QVERIFY2(rendered == c.prompt, qPrintable(where + ": rendered " + QString::fromStdString(rendered)));
                std::vector<PreparedImage> images;
                for (const auto& f : c.images) images.push_back(prepare_image(read_bytes(data / "images" / f), vc));
                const PreparedPrompt prompt =
                    expand_prompt(rendered, images, vc, tokenizer, {.add_special_tokens = tmpl.tokenize_with_special_tokens()});
                QVERIFY2(prompt.ids == want["prompt_ids"].get<std::vector<int32_t>>(), qPrintable(where + ": prompt ids"));

                // The image embeddings, every 16th row, within 1e-4 of transformers'.
                std::vector<float> rows;
                int64_t total = 0;
                for (const auto& im : images) {
                    const Tensor e = encoder.encode(*im.pixels);
                    std::vector<float> all(std::size_t(e.rows * e.cols));
                    backend->read(e, all);
                    for (int64_t r = 0; r < e.rows; ++r, ++total)
                        if (total % 16 == 0) rows.insert(rows.end(), all.begin() + r * e.cols, all.begin() + (r + 1) * e.cols);
                }
                QCOMPARE(total, want["embedding_rows"].get<int64_t>());
                std::vector<double> expected;
                for (const auto& row : want["embeddings_every_16th_row"])
                    for (double v : row) expected.push_back(v);
                QCOMPARE(rows.size(), expected.size());
                const double err = max_relative_error(rows, expected);
                QVERIFY2(err < 1e-4, qPrintable(where + QString(": embeddings differ by %1").arg(err)));

                GenerationRequest r = greedy(prompt.ids, spec.new_tokens);
                r.images = prompt.images;
                const Collected got = runner.run(std::move(r));
                QVERIFY2(got.final_event.finish != FinishReason::Error, got.final_event.error.c_str());
                QVERIFY2(got.ids == want["generated_ids"].get<std::vector<int32_t>>(), qPrintable(where + ": generated ids"));
            }
        }
    }

    // The tower's products in FP8 (the CPU's reference: FP8 weights, fp32 arithmetic) against the
    // stored weights: every image embedding within cosine 0.999, and the greedy replies equal for
    // 16 tokens unless they part where the stored weights' two likeliest tokens were a near tie.
    void tinyVlmsWithAnFp8Tower() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        const TinyVlmSpec spec = load_tiny_vlm_spec();
        for (const TinyVlm& m : spec.models) {
            LUMEN_REQUIRE_TOKENIZER(data, m.tokenizer);
            QTemporaryDir dir;
            build_tiny_vlm(spec, m, data / "tokenizers", path_of(dir));
            EngineOptions options;
            options.cache_max_entry_count = 64;
            options.image_encoder = make_image_encoder;
            EngineRunner stored_runner(path_of(dir), options);
            options.image_encoder = image_encoder_factory(TowerWeights::Fp8);
            EngineRunner fp8_runner(path_of(dir), options);
            const ModelConfig& config = stored_runner.engine().model_config();
            const Tokenizer& tokenizer = stored_runner.engine().tokenizer();
            const VisionConfig vc = load_vision_config(path_of(dir), config, &tokenizer);
            const ChatTemplate tmpl = chat_template_for(config, tokenizer);
            auto backend = make_cpu_backend();
            VisionEncoder stored(path_of(dir), vc, *backend), fp8(path_of(dir), vc, *backend, TowerWeights::Fp8);
            QVERIFY(fp8.weight_bytes() < stored.weight_bytes());
            double worst = 1;
            for (std::size_t i = 0; i < m.cases.size(); ++i) {
                const TinyVlmCase& c = m.cases[i];
                const QString where = QString::fromStdString(m.name + " case " + std::to_string(i));
                std::vector<ChatMessage> messages;
                for (const auto& msg : c.messages) messages.push_back({msg["role"], msg["text"], msg["images"]});
                std::vector<PreparedImage> images;
                for (const auto& f : c.images) images.push_back(prepare_image(read_bytes(data / "images" / f), vc));
                for (const auto& im : images) worst = std::min(worst, lowest_cosine(*backend, stored, fp8, *im.pixels));
                const PreparedPrompt prompt =
                    expand_prompt(tmpl.render(messages), images, vc, tokenizer, {.add_special_tokens = tmpl.tokenize_with_special_tokens()});
                auto run = [&](EngineRunner& runner) {
                    GenerationRequest r = greedy(prompt.ids, spec.new_tokens);
                    r.images = prompt.images;
                    r.logprobs = 2;
                    Collected got = runner.run(std::move(r));
                    if (got.final_event.finish == FinishReason::Error) QTest::qFail(got.final_event.error.c_str(), __FILE__, __LINE__);
                    return got;
                };
                const Collected want = run(stored_runner), got = run(fp8_runner);
                std::size_t same = 0;
                while (same < want.ids.size() && same < got.ids.size() && want.ids[same] == got.ids[same]) ++same;
                if (same >= std::min<std::size_t>(16, want.ids.size())) {
                    qInfo("%s: the FP8 tower's greedy reply equals the stored weights' for %zu of %zu tokens", qPrintable(where), same,
                          want.ids.size());
                    continue;
                }
                QVERIFY(same < want.logprobs.size() && want.logprobs[same].top.size() == 2);
                const double margin = want.logprobs[same].top[0].logprob - want.logprobs[same].top[1].logprob;
                qInfo("%s: the FP8 tower's greedy reply parts from the stored weights' at token %zu, where their two likeliest "
                      "tokens were %.4f apart in log-probability",
                      qPrintable(where), same + 1, margin);
                QVERIFY2(margin < 0.05, qPrintable(where + ": parted within 16 tokens where the stored weights had no near tie"));
            }
            // Random weights (benchmarks): the FP8 tower is the 16-bit one of the same seed quantized,
            // so the two agree closely; how closely is reported, not asserted: with random weights
            // each layer's update is as large as the residual stream (no trained layer scale), so
            // E4M3's error of about 2.4% a weight adds up over the layers (docs/PERFORMANCE.md).
            VisionEncoder random16(vc, *backend, DType::F32, 3), random8(vc, *backend, DType::F32, 3, TowerWeights::Fp8);
            const double worst_random = lowest_cosine(*backend, random16, random8,
                                                      *prepare_image(read_bytes(data / "images" / m.cases.front().images.front()), vc).pixels);
            qInfo("%s: FP8 tower, lowest cosine similarity of an image embedding to the stored weights' %.6f (random weights: %.6f)",
                  m.name.c_str(), worst, worst_random);
            QVERIFY2(worst >= 0.999, qPrintable(QString::fromStdString(m.name) + QString(": cosine similarity %1").arg(worst, 0, 'f', 6)));
        }
    }
};

QTEST_GUILESS_MAIN(TestVision)
#include "test_vision.moc"
