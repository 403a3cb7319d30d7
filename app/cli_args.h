#pragma once
// A small command-line parser for lumen-cli: "--name value", "--name=value", boolean flags, and
// positional arguments; anything unknown is an error that names it.
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace lumen::cli {

class Args {
public:
    // `valued` options take a value; `flags` do not. Throws lumen::Error on unknown or malformed input.
    Args(const std::vector<std::string>& argv, const std::set<std::string>& valued, const std::set<std::string>& flags,
         const std::set<std::string>& repeatable = {});

    bool flag(const std::string& name) const { return flags_.count(name) != 0; }
    std::optional<std::string> value(const std::string& name) const;
    const std::vector<std::string>& values(const std::string& name) const;
    const std::vector<std::string>& positional() const { return positional_; }

    std::string required(const std::string& name) const;
    double number(const std::string& name, double fallback) const;
    // An integer in [lo, hi]; anything else (text, overflow, out of range) is an error naming the option.
    long long integer(const std::string& name, long long fallback, long long lo, long long hi) const;
    // A comma-separated list ("16,fp8"), and one of such integers ("1,16,64").
    std::vector<std::string> list(const std::string& name, const std::string& fallback) const;
    std::vector<long long> integers(const std::string& name, const std::string& fallback, long long lo, long long hi) const;

private:
    std::set<std::string> flags_;
    std::map<std::string, std::vector<std::string>> values_;
    std::vector<std::string> positional_;
};

}  // namespace lumen::cli
