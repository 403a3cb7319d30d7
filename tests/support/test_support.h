#pragma once
// Shared pieces of the test suites: writing model folders and safetensors files, finding
// ../shared/data, running lumen-cli.
#include <QString>
#include <QTemporaryDir>
#include <QStringList>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/util/dtype.h"

namespace lumen::test {

struct TensorSpec {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    std::string bytes;  // empty: zeros of the right size
};

inline std::filesystem::path path_of(const QTemporaryDir& dir) { return dir.path().toStdString(); }

// The bytes of a valid safetensors file holding `tensors` in order.
std::string safetensors_bytes(const std::vector<TensorSpec>& tensors);
void write_file(const std::filesystem::path& path, const std::string& bytes);
// A test's own data files (goldens, specs, shared data), read without the product's size limits.
std::optional<std::string> read_test_file(const std::filesystem::path& path);

// ../shared/data from the source tree, or nullopt (tests then QSKIP with a message).
std::optional<std::filesystem::path> shared_data();

// Runs lumen-cli with `args`; returns the exit code, stdout and stderr.
struct CliResult {
    int exit_code = -1;
    QByteArray out;
    QByteArray err;
};
CliResult run_cli(const QStringList& args, const QStringList& extra_env = {});

// One sequence's whole prompt as a batch: blocks 0, 1, ... in order, logits for the last token.
// A file of little-endian fp32 values (the goldens' logits).
std::vector<float> read_floats(const std::filesystem::path& path);
BatchLayout prompt_batch(const std::vector<int32_t>& prompt, int32_t block_size = 64);

// A small Llama-shaped config.json text for the given sizes.
std::string llama_config_json(int hidden, int layers, int heads, int kv_heads, int vocab, int intermediate);

// Tensors of a tiny Llama checkpoint matching llama_config_json's shapes (HF names).
std::vector<TensorSpec> llama_tensors(int hidden, int layers, int heads, int kv_heads, int vocab, int intermediate,
                                      DType dtype = DType::F32);

// max |a - b| / max |a|: how far `b` is from `a`, relative to a's largest value.
double relative_error(const std::vector<float>& a, const std::vector<float>& b);

// lumen-cli perplexity of `model` on ../shared/data's TinyStories excerpt on the CPU, with `options`
// (throws std::runtime_error with its message where it fails or scores too few tokens).
double excerpt_perplexity(const std::filesystem::path& data, const QString& model, const QStringList& options = {});

}  // namespace lumen::test

#define LUMEN_REQUIRE_SHARED_DATA(var)                                                              \
    const auto var##_opt = ::lumen::test::shared_data();                                             \
    if (!var##_opt) QSKIP("../shared/data is absent; this test needs the real files described there"); \
    const std::filesystem::path var = *var##_opt

// Skips the test where the shared data lacks one of its tokenizers (a partial copy, as on a
// machine that carries only part of it).
#define LUMEN_REQUIRE_TOKENIZER(data, name)                                                                 \
    if (!std::filesystem::is_directory((data) / "tokenizers" / (name)))                                     \
    QSKIP(qPrintable(QString::fromStdString("the " + std::string(name) + " tokenizer is not in the shared data")))
