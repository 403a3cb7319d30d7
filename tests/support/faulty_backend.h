#pragma once
// A backend that passes every call to a real one and, at the start of its `fail_at`-th forward pass,
// runs `fault` on it: a test's way to make a device fail mid-batch (throw an Error of Scope::Device
// on the CPU, or provoke a real sticky error on a GPU).
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "engine/backend/backend.h"

namespace lumen::test {

class FaultyBackend final : public Backend {
public:
    FaultyBackend(std::unique_ptr<Backend> inner, int fail_at, std::function<void(Backend&)> fault)
        : inner_(std::move(inner)), fail_at_(fail_at), fault_(std::move(fault)) {}

    int forwards() const { return forwards_; }

    std::string name() const override { return inner_->name(); }
    DeviceInfo device() override { return inner_->device(); }
    uint64_t free_memory() override { return inner_->free_memory(); }
    bool device_lost() override { return inner_->device_lost(); }
    void synchronize() override { inner_->synchronize(); }
    double measure_read_bandwidth() override { return inner_->measure_read_bandwidth(); }
    DType compute_dtype() const override { return inner_->compute_dtype(); }
    void set_compute_dtype(DType t) override { inner_->set_compute_dtype(t); }
    // Memory comes from the real backend, which also takes it back.
    Buffer weight(const void* host, DType dtype, int64_t rows, int64_t cols) override { return inner_->weight(host, dtype, rows, cols); }
    bool weights_stay_on_host() const override { return inner_->weights_stay_on_host(); }
    Buffer random_weight(DType dtype, int64_t rows, int64_t cols, uint64_t seed, float center, float scale) override {
        return inner_->random_weight(dtype, rows, cols, seed, center, scale);
    }
    Buffer activation(int64_t rows, int64_t cols, DType dtype) override { return inner_->activation(rows, cols, dtype); }
    Buffer indices(std::span<const int32_t> values, int64_t rows) override { return inner_->indices(values, rows); }
    void allocate_kv_cache(const KvCacheShape& shape) override { inner_->allocate_kv_cache(shape); }
    const KvCacheShape& kv_cache_shape() const override { return inner_->kv_cache_shape(); }
    void read(const Tensor& t, std::span<float> out) override { inner_->read(t, out); }
    void write(Tensor t, std::span<const float> values) override { inner_->write(t, values); }
    void write_u8(Tensor t, std::span<const uint8_t> values) override { inner_->write_u8(t, values); }

    void begin_batch(const BatchLayout& batch, const RopeConfig& rope) override {
        batch_ = &batch;
        rope_ = rope;
        inner_->begin_batch(batch, rope);
    }
    void run_forward(const std::function<void()>& ops) override {
        if (++forwards_ == fail_at_) {
            fault_(*inner_);
            inner_->begin_batch(*batch_, rope_);  // the fault may have used the batch for its own ends
        }
        inner_->run_forward(ops);
    }
    void embed(const Tensor& table, Tensor out) override { inner_->embed(table, out); }
    void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor out) override { inner_->rms_norm(x, weight, eps, out); }
    void add(Tensor x, const Tensor& delta, const Tensor* column_scale) override { inner_->add(x, delta, column_scale); }
    void linear(const Tensor& x, const Weight& w, const Epilogue& epilogue, Tensor out) override { inner_->linear(x, w, epilogue, out); }
    void attention(const Tensor& qkv, const AttentionShape& shape, int32_t layer, Tensor out) override {
        inner_->attention(qkv, shape, layer, out);
    }
    void gather_logit_rows(const Tensor& x, Tensor out) override { inner_->gather_logit_rows(x, out); }
    void copy_kv_block(int32_t from, int32_t to) override { inner_->copy_kv_block(from, to); }
    void argmax_rows(const Tensor& logits, std::span<int32_t> out) override { inner_->argmax_rows(logits, out); }
    void sample_rows(const Tensor& logits, std::span<const SampleRow> rows, std::span<int32_t> out) override {
        inner_->sample_rows(logits, rows, out);
    }
    void layer_norm(const Tensor& x, const Tensor& weight, const Tensor* bias, float eps, Tensor out) override {
        inner_->layer_norm(x, weight, bias, eps, out);
    }
    void add_norm(Tensor x, const Tensor& delta, const Tensor* column_scale, const Tensor& weight, const Tensor* bias, float eps, bool rms,
                  Tensor out) override {
        inner_->add_norm(x, delta, column_scale, weight, bias, eps, rms, out);
    }
    void patch_rows(const Tensor& planes, const Tensor& levels, int64_t patch, Tensor out) override {
        inner_->patch_rows(planes, levels, patch, out);
    }
    void activate(Tensor x, Activation kind) override { inner_->activate(x, kind); }
    void attention_full(const Tensor& qkv, int32_t heads, int32_t head_dim, int64_t group_rows, Tensor out) override {
        inner_->attention_full(qkv, heads, head_dim, group_rows, out);
    }
    void gather_rows(const Tensor& src, const Tensor& index, Tensor out) override { inner_->gather_rows(src, index, out); }
    void copy(const Tensor& src, Tensor dst) override { inner_->copy(src, dst); }
    void run_recorded(const void* owner, int64_t key, const std::function<void()>& ops) override { inner_->run_recorded(owner, key, ops); }

protected:
    void free(const Tensor&) noexcept override {}  // this backend hands out none of its own

private:
    std::unique_ptr<Backend> inner_;
    int fail_at_;
    std::function<void(Backend&)> fault_;
    int forwards_ = 0;
    const BatchLayout* batch_ = nullptr;
    RopeConfig rope_;
};

}  // namespace lumen::test
