// Fuzz target: a vision-language model's configuration. The first byte picks the file the rest
// becomes (config.json, preprocessor_config.json or processor_config.json, the others valid
// LLaVA ones); a configuration that loads must preprocess an image and expand a prompt.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/model/model_config.h"
#include "engine/text/tokenizer.h"
#include "engine/util/error.h"
#include "tests/fuzz/fuzz_support.h"
#include "vision/preprocess.h"
#include "vision/prompt.h"
#include "vision/vision_config.h"

LUMEN_FUZZ_JSON_MUTATOR

namespace {

constexpr const char* kConfig =
    R"({"architectures":["LlavaForConditionalGeneration"],"image_token_index":258,"vision_config":{"hidden_size":8,)"
    R"("intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,"patch_size":14,"image_size":28},)"
    R"("text_config":{"model_type":"llama","hidden_size":16,"intermediate_size":32,"num_hidden_layers":1,)"
    R"("num_attention_heads":2,"vocab_size":259}})";
constexpr const char* kPreprocessor = R"({"crop_size":28,"size":{"shortest_edge":28},"resample":3})";
constexpr const char* kProcessor = R"({"image_token":"<image>"})";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace lumen;
    if (size == 0) return 0;
    const auto dir = fuzz::scratch_dir();
    static const std::unique_ptr<Tokenizer> tokenizer = [&] {
        fuzz::write_file(dir / "tokenizer.json", fuzz::tiny_tokenizer_json());
        return Tokenizer::load(dir);
    }();
    const char* files[] = {"config.json", "preprocessor_config.json", "processor_config.json"};
    const char* valid[] = {kConfig, kPreprocessor, kProcessor};
    const std::string fuzzed(reinterpret_cast<const char*>(data + 1), size - 1);
    for (int i = 0; i < 3; ++i) fuzz::write_file(dir / files[i], i == data[0] % 3 ? std::string_view(fuzzed) : valid[i]);
    try {
        const ModelConfig config = load_model_config(dir);
        const vision::VisionConfig vc = vision::load_vision_config(dir, config, tokenizer.get());
        vision::RgbImage image(40, 17);
        for (std::size_t i = 0; i < image.pixels.size(); ++i) image.pixels[i] = uint8_t(i * 37);
        const vision::PreparedImage prepared = vision::prepare_image(image, 1, vc);
        (void)vision::expand_prompt("<image>\nWhat is this?", {&prepared, 1}, vc, *tokenizer, {});
    } catch (const Error&) {
    }
    return 0;
}
