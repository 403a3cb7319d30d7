#pragma once
// Errors that reach users: each message says what is wrong and, where it can, what to do. The
// engine, the backends and the CUDA kernels all throw this one type.
#include <new>
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

// What to tell a user about any exception while `doing` something ("load the model"): a
// lumen::Error's own message, an allocation failure as a lack of memory, anything else as an
// internal error. A library's text ("std::bad_alloc", "basic_filebuf::underflow") never reaches a user.
inline std::string user_message(const std::exception& e, const std::string& doing) {
    if (dynamic_cast<const Error*>(&e)) return e.what();
    if (dynamic_cast<const std::bad_alloc*>(&e) || dynamic_cast<const std::length_error*>(&e))
        return "not enough memory to " + doing + "; close other programs or choose a smaller model or image";
    return "an unexpected internal error stopped Lumen from trying to " + doing + "; please report it";
}

}  // namespace lumen
