// `lumen-cli pull ORG/NAME[@REVISION]`: a model from the Hugging Face Hub into the shared cache,
// as the app's Get models does (hub/hub_download.h), with progress on the terminal.
#include <QCoreApplication>
#include <QNetworkProxyFactory>
#include <QTimer>
#include <chrono>
#include <cstdio>
#include <unistd.h>

#include "app/cli_args.h"
#include "app/cli_commands.h"
#include "engine/model/model_scanner.h"
#include "engine/util/error.h"
#include "hub/hub_download.h"

namespace lumen::cli {
namespace {

std::string clock_text(double seconds) {
    const long s = long(seconds + 0.5);
    char buf[32];
    if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    return buf;
}

}  // namespace

int run_pull(const std::vector<std::string>& argv) {
    const Args args(argv, {"cache", "endpoint"}, {"help"});
    if (args.flag("help") || args.positional().size() != 1) {
        std::fputs("Usage: lumen-cli pull ORG/NAME[@REVISION] [--cache DIR] [--endpoint URL]\n\n"
                   "Downloads a model from the Hugging Face Hub into the Hugging Face cache (HF_HUB_CACHE,\n"
                   "else HF_HOME/hub, else ~/.cache/huggingface/hub), laid out as huggingface_hub does, so\n"
                   "transformers, LMDeploy and vLLM use the same files. Only what Lumen loads is fetched:\n"
                   "safetensors weights, configs, tokenizer and processor files (never pickled .bin files).\n"
                   "Each file is checked against the hub's SHA-256 before it is kept; an interrupted pull\n"
                   "resumes where it stopped; files already in the cache are not fetched again.\n"
                   "The hub is HF_ENDPOINT (default https://huggingface.co); gated models need a token:\n"
                   "HF_TOKEN, or the file `huggingface-cli login` writes. Prints the model's folder.\n",
                   args.flag("help") ? stdout : stderr);
        return args.flag("help") ? 0 : 2;
    }
    std::string repo = args.positional()[0], revision = "main";
    if (const auto at = repo.find('@'); at != std::string::npos) {
        revision = repo.substr(at + 1);
        repo.resize(at);
    }
    const std::filesystem::path cache = args.value("cache").value_or(hf_hub_cache_dir().string());
    const std::string endpoint = args.value("endpoint").value_or(hub::default_endpoint());

    int argc = 1;
    char name[] = "lumen-cli";
    char* fake_argv[] = {name, nullptr};
    QCoreApplication app(argc, fake_argv);
    QNetworkProxyFactory::setUseSystemConfiguration(true);  // http_proxy, https_proxy, no_proxy
    hub::HubDownload download(QString::fromStdString(repo), QString::fromStdString(revision), cache, QString::fromStdString(endpoint),
                              QString::fromStdString(hub::default_token()));
    const bool tty = ::isatty(STDERR_FILENO);
    QObject::connect(&download, &hub::HubDownload::planned, [&](const hub::DownloadPlan& p) {
        std::fprintf(stderr, "%s@%s is commit %s: %d files, %s", repo.c_str(), revision.c_str(), p.commit.left(12).toStdString().c_str(),
                     p.files, format_bytes(static_cast<unsigned long long>(p.total)).c_str());
        if (p.present > 0) std::fprintf(stderr, " (%s already in the cache)", format_bytes(static_cast<unsigned long long>(p.present)).c_str());
        std::fputs("\n", stderr);
    });
    auto last_line = std::chrono::steady_clock::now() - std::chrono::seconds(10);
    QObject::connect(&download, &hub::HubDownload::progress, [&](qint64 done, qint64 total, double speed, const QString& file) {
        // A terminal gets one line redrawn; a log gets a line every few seconds.
        const auto now = std::chrono::steady_clock::now();
        if (!tty && now - last_line < std::chrono::seconds(5) && done < total) return;
        last_line = now;
        const double percent = total > 0 ? 100.0 * double(done) / double(total) : 100.0;
        std::string left = speed > 0 && done < total ? clock_text(double(total - done) / speed) + " left" : "";
        std::fprintf(stderr, "%s%5.1f%%  %s / %s  %s/s  %s  %s%s", tty ? "\r\033[K" : "", percent,
                     format_bytes(static_cast<unsigned long long>(done)).c_str(), format_bytes(static_cast<unsigned long long>(total)).c_str(),
                     format_bytes(static_cast<unsigned long long>(speed)).c_str(), left.c_str(), file.toStdString().c_str(), tty ? "" : "\n");
        std::fflush(stderr);
    });
    QString error;
    QObject::connect(&download, &hub::HubDownload::finished, [&](const QString& e) {
        error = e;
        app.quit();
    });
    QTimer::singleShot(0, &download, &hub::HubDownload::start);
    app.exec();
    if (tty) std::fputs("\n", stderr);
    if (!error.isEmpty()) {
        std::fprintf(stderr, "lumen-cli pull: %s\n", error.toStdString().c_str());
        return 1;
    }
    std::printf("%s\n", download.snapshot().string().c_str());
    return 0;
}

}  // namespace lumen::cli
