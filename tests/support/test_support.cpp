#include "tests/support/test_support.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include <QProcess>
#include <QProcessEnvironment>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/util/text_file.h"

namespace lumen::test {

std::string safetensors_bytes(const std::vector<TensorSpec>& tensors) {
    nlohmann::json header = nlohmann::json::object();
    std::string data;
    for (const auto& t : tensors) {
        int64_t numel = 1;
        for (auto d : t.shape) numel *= d;
        const std::string bytes = t.bytes.empty() ? std::string(std::size_t(numel) * dtype_size(t.dtype), '\0') : t.bytes;
        header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                          {"shape", t.shape},
                          {"data_offsets", {data.size(), data.size() + bytes.size()}}};
        data += bytes;
    }
    std::string text = header.dump();
    while (text.size() % 8) text += ' ';
    std::string out(8, '\0');
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) out[std::size_t(i)] = char((n >> (8 * i)) & 0xff);
    return out + text + data;
}

void write_file(const std::filesystem::path& path, const std::string& bytes) {
    std::filesystem::create_directories(path.parent_path());
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
}

std::vector<float> read_floats(const std::filesystem::path& path) {
    const std::string bytes = *read_test_file(path);
    std::vector<float> out(bytes.size() / 4);
    std::memcpy(out.data(), bytes.data(), out.size() * 4);
    return out;
}

std::optional<std::string> read_test_file(const std::filesystem::path& path) {
    return read_text_file(path, {"a test data file", uint64_t(1) << 34});
}

std::optional<std::filesystem::path> shared_data() {
    const auto dir = std::filesystem::path(LUMEN_SOURCE_DIR) / ".." / "shared" / "data";
    if (std::filesystem::is_directory(dir)) return std::filesystem::canonical(dir);
    return std::nullopt;
}

CliResult run_cli(const QStringList& args, const QStringList& extra_env) {
    QProcess p;
    auto env = QProcessEnvironment::systemEnvironment();
    for (const auto& kv : extra_env) {
        const auto eq = kv.indexOf('=');
        env.insert(kv.left(eq), kv.mid(eq + 1));
    }
    p.setProcessEnvironment(env);
    p.start(QString::fromUtf8(LUMEN_CLI_PATH), args);
    CliResult r;
    if (!p.waitForFinished(120000)) {
        p.kill();
        p.waitForFinished();
        r.err = "lumen-cli timed out";
        return r;
    }
    r.exit_code = p.exitStatus() == QProcess::NormalExit ? p.exitCode() : -1;
    r.out = p.readAllStandardOutput();
    r.err = p.readAllStandardError();
    return r;
}

BatchLayout prompt_batch(const std::vector<int32_t>& prompt, int32_t block_size) {
    BatchLayout batch;
    for (std::size_t i = 0; i < prompt.size(); ++i) {
        batch.token_ids.push_back(prompt[i]);
        batch.positions.push_back(int32_t(i));
        batch.token_seq.push_back(0);
        batch.rope_lengths.push_back(int32_t(prompt.size()));
    }
    batch.max_blocks = int32_t((prompt.size() + std::size_t(block_size) - 1) / std::size_t(block_size));
    for (int32_t b = 0; b < batch.max_blocks; ++b) batch.block_tables.push_back(b);
    batch.logit_rows = {int32_t(prompt.size() - 1)};
    return batch;
}

std::string llama_config_json(int hidden, int layers, int heads, int kv_heads, int vocab, int intermediate) {
    return nlohmann::json{{"architectures", {"LlamaForCausalLM"}},
                          {"model_type", "llama"},
                          {"hidden_size", hidden},
                          {"intermediate_size", intermediate},
                          {"num_hidden_layers", layers},
                          {"num_attention_heads", heads},
                          {"num_key_value_heads", kv_heads},
                          {"vocab_size", vocab},
                          {"max_position_embeddings", 256},
                          {"rms_norm_eps", 1e-5},
                          {"tie_word_embeddings", false},
                          {"torch_dtype", "float32"},
                          {"bos_token_id", 1},
                          {"eos_token_id", 2}}
        .dump(2);
}

std::vector<TensorSpec> llama_tensors(int hidden, int layers, int heads, int kv_heads, int vocab, int intermediate,
                                      DType dtype) {
    const int64_t hd = hidden / heads;
    std::vector<TensorSpec> t;
    t.push_back({"model.embed_tokens.weight", dtype, {vocab, hidden}, {}});
    for (int l = 0; l < layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        t.push_back({p + "input_layernorm.weight", dtype, {hidden}, {}});
        t.push_back({p + "self_attn.q_proj.weight", dtype, {heads * hd, hidden}, {}});
        t.push_back({p + "self_attn.k_proj.weight", dtype, {kv_heads * hd, hidden}, {}});
        t.push_back({p + "self_attn.v_proj.weight", dtype, {kv_heads * hd, hidden}, {}});
        t.push_back({p + "self_attn.o_proj.weight", dtype, {hidden, heads * hd}, {}});
        t.push_back({p + "post_attention_layernorm.weight", dtype, {hidden}, {}});
        t.push_back({p + "mlp.gate_proj.weight", dtype, {intermediate, hidden}, {}});
        t.push_back({p + "mlp.up_proj.weight", dtype, {intermediate, hidden}, {}});
        t.push_back({p + "mlp.down_proj.weight", dtype, {hidden, intermediate}, {}});
    }
    t.push_back({"model.norm.weight", dtype, {hidden}, {}});
    t.push_back({"lm_head.weight", dtype, {vocab, hidden}, {}});
    return t;
}

double excerpt_perplexity(const std::filesystem::path& data, const QString& model, const QStringList& options) {
    const QString text = QString::fromStdString((data / "texts" / "tinystories-valid-excerpt.txt").string());
    const auto r = run_cli(QStringList{"perplexity", "--model", model, "--file", text, "--device", "cpu", "--json"} + options);
    if (r.exit_code != 0) throw std::runtime_error(r.err.toStdString());
    const auto out = nlohmann::json::parse(r.out.trimmed().split('\n').last().toStdString());
    if (out["tokens"].get<int64_t>() < 15000) throw std::runtime_error("too few tokens scored");
    return out["perplexity"].get<double>();
}

double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
    double scale = 1e-30, worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        scale = std::max(scale, double(std::fabs(a[i])));
        worst = std::max(worst, double(std::fabs(a[i] - b[i])));
    }
    return worst / scale;
}

}  // namespace lumen::test
