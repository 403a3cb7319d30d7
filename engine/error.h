#pragma once
// Errors that reach users: each message says what is wrong and, where it can, what to do.
#include <stdexcept>
#include <string>

namespace lumen {

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace lumen
