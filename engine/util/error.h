#pragma once
// Errors that reach users: each message says what is wrong and, where it can, what to do. The
// engine, the backends and the CUDA kernels all throw this one type.
#include <stdexcept>
#include <string>

namespace lumen {

class Error : public std::runtime_error {
public:
    // What an error leaves broken: the one request, file or option at fault (everything else goes
    // on), or the device, which runs nothing more until the model is loaded again (a sticky CUDA
    // error such as an illegal memory access poisons the whole context).
    enum class Scope { Request, Device };

    explicit Error(const std::string& message, Scope scope = Scope::Request) : std::runtime_error(message), scope_(scope) {}
    explicit Error(const char* message, Scope scope = Scope::Request) : std::runtime_error(message), scope_(scope) {}

    Scope scope() const { return scope_; }
    bool device_lost() const { return scope_ == Scope::Device; }

private:
    Scope scope_;
};

}  // namespace lumen
