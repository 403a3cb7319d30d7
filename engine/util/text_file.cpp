#include "engine/util/text_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/util/error.h"

namespace lumen {
namespace {

std::string not_a_file(const std::filesystem::path& path, mode_t mode) {
    const char* what = S_ISDIR(mode)    ? "a folder"
                       : S_ISFIFO(mode) ? "a pipe"
                       : S_ISSOCK(mode) ? "a socket"
                       : S_ISCHR(mode) || S_ISBLK(mode) ? "a device"
                                                        : "not a regular file";
    return path.string() + ": is " + what + ", not a file Lumen can read";
}

class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

}  // namespace

std::string human_bytes(uint64_t bytes) {
    char buf[32];
    if (bytes >= (uint64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.1f GB", double(bytes) / double(1 << 30));
    else if (bytes >= (uint64_t(1) << 20)) std::snprintf(buf, sizeof buf, "%.0f MB", double(bytes) / double(1 << 20));
    else if (bytes >= 1024) std::snprintf(buf, sizeof buf, "%.0f KB", double(bytes) / 1024.0);
    else std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(bytes));
    return buf;
}

void require_regular_file(const std::filesystem::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw Error(path.string() + ": cannot open: " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw Error(not_a_file(path, st.st_mode));
}

void require_folder(const std::filesystem::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) throw Error(path.string() + ": no such folder");
        throw Error(path.string() + ": cannot open: " + std::strerror(errno));
    }
    if (S_ISREG(st.st_mode)) throw Error(path.string() + ": is a file; give the folder that holds the model's files");
    if (!S_ISDIR(st.st_mode)) throw Error(not_a_file(path, st.st_mode));
}

std::optional<std::string> read_text_file(const std::filesystem::path& path, const FileKind& kind) {
    // O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one.
    const Fd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (fd.get() < 0) {
        if (errno == ENOENT) return std::nullopt;
        if (errno == ENOTDIR) throw Error(path.string() + ": a part of this path is a file, not a folder");
        throw Error(path.string() + ": cannot open: " + std::strerror(errno));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw Error(path.string() + ": cannot read: " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw Error(not_a_file(path, st.st_mode));
    const uint64_t size = uint64_t(st.st_size);
    if (size > kind.max_bytes)
        throw Error(path.string() + ": " + human_bytes(size) + ", larger than " + std::string(kind.name) + " can be (at most " +
                    human_bytes(kind.max_bytes) + ")");
    std::string out(size, '\0');
    std::size_t done = 0;
    while (done < out.size()) {
        const ssize_t n = ::read(fd.get(), out.data() + done, out.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw Error(path.string() + ": cannot read: " + std::strerror(errno));
        if (n == 0) break;  // shrank while reading
        done += std::size_t(n);
    }
    out.resize(done);
    return out;
}

}  // namespace lumen
