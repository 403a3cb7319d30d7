// Fuzz target: any bytes as an image file (PNG, JPEG, WebP, BMP, GIF, with EXIF and XMP), then
// each preprocessing a model family does, at small sizes.
#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/util/error.h"
#include "vision/image.h"
#include "vision/preprocess.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace lumen::vision;
    try {
        (void)probe_image({data, size});
        const RgbImage image = decode_image({data, size}, {4'000'000});
        Preprocessing p;
        p.size = p.shortest_edge = 28;
        p.mean = {0.5f, 0.5f, 0.5f};
        p.std = {0.25f, 0.25f, 0.25f};
        // A working image of up to 100 MP (the default limit) is bounded work, about a second in a
        // release build, but past the 10 s timeout under the sanitizers: the same check, lower.
        p.max_working_pixels = 4'000'000;
        for (const auto mode : {Preprocessing::Mode::ShortestEdgeCrop, Preprocessing::Mode::PadToSquare, Preprocessing::Mode::Tiles}) {
            p.mode = mode;
            p.min_tiles = 1;
            p.max_tiles = 6;
            (void)preprocess(image, p);
        }
    } catch (const lumen::Error&) {
    }
    return 0;
}
