#pragma once
// The weights of a Hugging Face model folder: model.safetensors, or the shards that
// model.safetensors.index.json lists. Pickle checkpoints are refused: loading them runs code.
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/model/safetensors.h"

namespace lumen {

class Checkpoint {
public:
    explicit Checkpoint(const std::filesystem::path& dir);  // throws lumen::Error

    const TensorInfo* find(std::string_view name) const;
    const TensorInfo& get(std::string_view name) const;  // throws when absent
    const std::vector<const TensorInfo*>& tensors() const { return tensors_; }
    const std::vector<std::filesystem::path>& files() const { return files_; }

    int64_t parameter_count() const;
    // The floating-point type holding most parameters (what a model is "stored in").
    std::optional<DType> main_dtype() const;

private:
    std::filesystem::path dir_;
    std::vector<std::unique_ptr<SafetensorsFile>> shards_;
    std::vector<std::filesystem::path> files_;
    std::vector<const TensorInfo*> tensors_;
    std::map<std::string, const TensorInfo*, std::less<>> by_name_;
};

// The error for a folder whose weights are only in a pickle format, or nullopt if it has none.
std::optional<std::string> pickle_checkpoint_error(const std::filesystem::path& dir);

}  // namespace lumen
