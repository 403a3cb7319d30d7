// Not a test: the two HTTP libraries issue #19 allowed for the server (cpp-httplib, which
// api/openai_server uses, and Boost.Beast), timed on what the server does most: streaming
// server-sent events to many clients at once. A producer thread stands for the engine: every
// `interval` it makes one event for each stream, as a decode step makes one token for each request,
// and hands it to that stream's handler through its own condition variable (as
// api/openai_server's event router does). Each library's handler writes the event as a chunk of
// its chunked response; clients in the same process (raw sockets, the same for both) read them.
// Reported: delivery latency (the event made -> a client has it) percentiles, and the process's CPU
// time per event delivered. Built where Boost's headers are (libboost-dev; not part of .ci/setup):
//   build/tests/http_stream_bench --library httplib|beast [--clients 64] [--events 2000] [--interval-us 3000]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <httplib.h>

namespace {

using Clock = std::chrono::steady_clock;

int64_t now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }

// One stream's events, waited for by its handler alone.
struct Channel {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<std::string> events;
    bool ended = false;

    // The next event; empty once the stream has ended.
    std::string next() {
        std::unique_lock lock(mutex);
        ready.wait(lock, [&] { return !events.empty() || ended; });
        if (events.empty()) return {};
        std::string e = std::move(events.front());
        events.pop_front();
        return e;
    }
};

struct Hub {
    std::mutex mutex;
    std::condition_variable joined;
    std::vector<std::shared_ptr<Channel>> channels;

    std::shared_ptr<Channel> open() {
        auto c = std::make_shared<Channel>();
        std::lock_guard lock(mutex);
        channels.push_back(c);
        joined.notify_all();
        return c;
    }
    // Once `clients` streams are open: `events` steps, `interval_us` apart, then the end. Returns
    // when the first step was made.
    Clock::time_point produce(int clients, int events, int interval_us) {
        {
            std::unique_lock lock(mutex);
            joined.wait(lock, [&] { return int(channels.size()) == clients; });
        }
        const auto first = Clock::now();
        auto next = first;
        for (int e = 0; e < events; ++e) {
            // The shape of a chat completion chunk, with the time it was made in place of an id.
            const std::string event = "data: {\"t\":" + std::to_string(now_ns()) +
                                      ",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word\"},"
                                      "\"finish_reason\":null}]}\n\n";
            for (const auto& c : channels) {
                {
                    std::lock_guard lock(c->mutex);
                    c->events.push_back(event);
                }
                c->ready.notify_one();
            }
            next += std::chrono::microseconds(interval_us);
            std::this_thread::sleep_until(next);
        }
        for (const auto& c : channels) {
            {
                std::lock_guard lock(c->mutex);
                c->ended = true;
            }
            c->ready.notify_one();
        }
        return first;
    }
};

// --- the servers -------------------------------------------------------------------------------

struct Server {
    virtual ~Server() = default;
    virtual int port() const = 0;
};

class HttplibServer : public Server {
public:
    HttplibServer(Hub& hub, int threads) {
        http_.new_task_queue = [threads] { return new httplib::ThreadPool(std::size_t(threads)); };
        http_.Post("/stream", [&hub](const httplib::Request&, httplib::Response& res) {
            auto channel = hub.open();
            res.set_chunked_content_provider("text/event-stream", [channel](std::size_t, httplib::DataSink& sink) {
                const std::string e = channel->next();
                if (e.empty()) {
                    sink.done();
                    return true;
                }
                return sink.write(e.data(), e.size());
            });
        });
        // As api/openai_server does: SO_REUSEADDR only, and a deeper listen queue than Debian's build's 5.
        int listening = -1;
        http_.set_socket_options([&listening](int sock) {
            const int yes = 1;
            setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
            listening = sock;
        });
        port_ = http_.bind_to_any_port("127.0.0.1");
        if (listening >= 0) ::listen(listening, 1024);
        thread_ = std::thread([this] { http_.listen_after_bind(); });
    }
    int port() const override { return port_; }

private:
    httplib::Server http_;
    int port_ = 0;
    std::thread thread_;
};

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

// Beast's synchronous form, a thread per connection: the same model as httplib's pool.
class BeastServer : public Server {
public:
    explicit BeastServer(Hub& hub) : hub_(hub), acceptor_(io_, {net::ip::make_address("127.0.0.1"), 0}) {
        thread_ = std::thread([this] { accept(); });
    }
    int port() const override { return acceptor_.local_endpoint().port(); }

private:
    void accept() {
        for (;;) {
            beast::error_code ec;
            net::ip::tcp::socket socket(io_);
            acceptor_.accept(socket, ec);
            if (ec) return;
            sessions_.emplace_back([this, s = std::move(socket)]() mutable { session(std::move(s)); });
        }
    }
    void session(net::ip::tcp::socket socket) {
        beast::error_code ec;
        beast::flat_buffer buffer;
        http::request<http::string_body> request;
        http::read(socket, buffer, request, ec);
        if (ec) return;
        auto channel = hub_.open();
        http::response<http::empty_body> response{http::status::ok, request.version()};
        response.set(http::field::content_type, "text/event-stream");
        response.chunked(true);
        http::response_serializer<http::empty_body> head{response};
        http::write_header(socket, head, ec);
        for (std::string e; !ec && !(e = channel->next()).empty();) net::write(socket, http::make_chunk(net::buffer(e)), ec);
        if (!ec) net::write(socket, http::make_chunk_last(), ec);
        socket.shutdown(net::ip::tcp::socket::shutdown_send, ec);
    }

    Hub& hub_;
    net::io_context io_;
    net::ip::tcp::acceptor acceptor_;
    std::thread thread_;
    std::vector<std::thread> sessions_;
};

// --- the clients -------------------------------------------------------------------------------

// Reads one stream to its end; returns each event's delivery latency in microseconds.
std::vector<double> read_stream(int port) {
    std::vector<double> latencies;
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(uint16_t(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        std::perror("connect");
        std::exit(1);
    }
    const std::string request = "POST /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n";
    if (::send(fd, request.data(), request.size(), 0) != ssize_t(request.size())) std::exit(1);
    std::string pending;
    char buffer[65536];
    for (;;) {
        const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n <= 0) break;
        const int64_t arrived = now_ns();
        pending.append(buffer, std::size_t(n));
        for (std::size_t at; (at = pending.find("data: {\"t\":")) != std::string::npos;) {
            const std::size_t end = pending.find("\n\n", at);
            if (end == std::string::npos) break;
            const int64_t made = std::strtoll(pending.c_str() + at + 11, nullptr, 10);
            latencies.push_back(double(arrived - made) / 1e3);
            pending.erase(0, end + 2);
        }
        if (pending.find("\r\n0\r\n\r\n") != std::string::npos) break;  // the last chunk
    }
    ::close(fd);
    return latencies;
}

double cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
    std::string library = "httplib";
    int clients = 64, events = 2000, interval_us = 3000;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        if (flag == "--library") library = argv[i + 1];
        else if (flag == "--clients") clients = std::atoi(argv[i + 1]);
        else if (flag == "--events") events = std::atoi(argv[i + 1]);
        else if (flag == "--interval-us") interval_us = std::atoi(argv[i + 1]);
        else {
            std::fprintf(stderr, "usage: %s --library httplib|beast [--clients N] [--events N] [--interval-us N]\n", argv[0]);
            return 2;
        }
    }
    Hub hub;
    std::unique_ptr<Server> server;
    if (library == "httplib") server = std::make_unique<HttplibServer>(hub, clients + 8);
    else if (library == "beast") server = std::make_unique<BeastServer>(hub);
    else return 2;

    const double cpu_before = cpu_seconds();
    std::vector<std::vector<double>> per_client(static_cast<std::size_t>(clients));
    std::vector<std::thread> readers;
    for (int c = 0; c < clients; ++c)
        readers.emplace_back([&, c] { per_client[std::size_t(c)] = read_stream(server->port()); });
    const auto started = hub.produce(clients, events, interval_us);
    for (auto& t : readers) t.join();
    const double wall = std::chrono::duration<double>(Clock::now() - started).count();
    const double cpu = cpu_seconds() - cpu_before;

    std::vector<double> all;
    for (const auto& v : per_client) all.insert(all.end(), v.begin(), v.end());
    if (all.size() != std::size_t(clients) * std::size_t(events)) {
        std::fprintf(stderr, "%zu events delivered, %d expected\n", all.size(), clients * events);
        return 1;
    }
    std::sort(all.begin(), all.end());
    auto pct = [&](double p) { return all[std::min(all.size() - 1, std::size_t(p * double(all.size())))]; };
    std::printf("%-8s clients %3d  events %zu  latency us p50 %.1f p90 %.1f p99 %.1f max %.1f  cpu %.2f us/event  (%.1f s)\n",
                library.c_str(), clients, all.size(), pct(0.5), pct(0.9), pct(0.99), all.back(), cpu * 1e6 / double(all.size()), wall);
    // The servers' threads are left running: a blocked accept() is not woken by closing its socket.
    std::fflush(stdout);
    std::_Exit(0);
}
