#include "ui/get_models_dialog.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDialogButtonBox>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QMessageBox>
#include <QNetworkReply>
#include <QProgressBar>
#include <QPushButton>
#include <QTableWidget>
#include <QVBoxLayout>
#include <algorithm>
#include <filesystem>

#include "engine/backend/device.h"
#include "engine/model/model_config.h"
#include "engine/model/model_scanner.h"
#include "hub/hub_cache.h"
#include "hub/hub_download.h"
#include "ui/app_settings.h"
#include "ui/keychain.h"
#include "ui/model_list_model.h"

namespace lumen::ui {
namespace {

constexpr const char* kTokenKey = "huggingface token";

// What runs well here, for a first choice (all safetensors, all architectures Lumen loads).
struct Suggestion {
    const char* id;
    bool vision;
    bool gated = false;
};
constexpr Suggestion kSuggested[] = {
    {"OpenGVLab/InternVL2_5-1B", true},        {"OpenGVLab/InternVL2_5-2B", true},      {"OpenGVLab/InternVL2_5-8B", true},
    {"OpenGVLab/InternVL2_5-8B-AWQ", true},    {"OpenGVLab/InternVL2-2B", true},        {"OpenGVLab/InternVL2-8B", true},
    {"llava-hf/llava-1.5-7b-hf", true},        {"internlm/internlm2-chat-1_8b", false}, {"internlm/internlm2-chat-7b", false},
    {"Qwen/Qwen2.5-1.5B-Instruct", false},     {"Qwen/Qwen2.5-7B-Instruct", false},     {"Qwen/Qwen2.5-7B-Instruct-AWQ", false},
    {"meta-llama/Meta-Llama-3-8B-Instruct", false, true},
};

QString input_kind(const QString& pipeline_tag) {
    return pipeline_tag == "image-text-to-text" || pipeline_tag == "visual-question-answering" ? QObject::tr("vision + text")
                                                                                                : QObject::tr("text");
}

QString time_text(double seconds) {
    const qint64 s = qint64(seconds + 0.5);
    return s >= 3600 ? QString("%1:%2:%3").arg(s / 3600).arg(s / 60 % 60, 2, 10, QChar('0')).arg(s % 60, 2, 10, QChar('0'))
                     : QString("%1:%2").arg(s / 60).arg(s % 60, 2, 10, QChar('0'));
}

}  // namespace

GetModelsDialog::GetModelsDialog(AppSettings& settings, QWidget* parent)
    : QDialog(parent), settings_(settings), endpoint_(settings.hub_endpoint()) {
    setWindowTitle(tr("Get models"));
    resize(980, 620);
    token_ = QString::fromStdString(hub::default_token());

    query_ = new QLineEdit(this);
    query_->setPlaceholderText(tr("Search the Hugging Face Hub, for example InternVL2"));
    query_->setAccessibleName(tr("Search models"));
    query_->setClearButtonEnabled(true);
    kind_ = new QComboBox(this);
    kind_->setAccessibleName(tr("Kind of model"));
    kind_->addItem(tr("All models"), QString());
    kind_->addItem(tr("Vision and text"), "image-text-to-text");
    kind_->addItem(tr("Text"), "text-generation");
    auto* search_button = new QPushButton(tr("Search"), this);

    results_ = new QTableWidget(0, 3, this);
    results_->setHorizontalHeaderLabels({tr("Model"), tr("Input"), tr("Downloads")});
    results_->setAccessibleName(tr("Models on the hub"));
    results_->setSelectionBehavior(QAbstractItemView::SelectRows);
    results_->setSelectionMode(QAbstractItemView::SingleSelection);
    results_->setEditTriggers(QAbstractItemView::NoEditTriggers);
    results_->verticalHeader()->hide();
    results_->horizontalHeader()->setSectionResizeMode(0, QHeaderView::Stretch);
    results_->setShowGrid(false);
    results_->setAlternatingRowColors(true);

    title_ = new QLabel(this);
    QFont bold = title_->font();
    bold.setBold(true);
    bold.setPointSizeF(bold.pointSizeF() * 1.2);
    title_->setFont(bold);
    title_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    size_ = new QLabel(this);
    size_->setWordWrap(true);
    fit_ = new QLabel(this);
    fit_->setWordWrap(true);
    fit_->setAccessibleName(tr("Whether it fits"));
    fit_->setTextFormat(Qt::RichText);
    fit_->setOpenExternalLinks(true);
    status_ = new QLabel(this);
    status_->setWordWrap(true);
    status_->setAccessibleName(tr("Download status"));
    status_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    progress_ = new QProgressBar(this);
    progress_->setRange(0, 1000);
    progress_->setAccessibleName(tr("Download progress"));
    progress_->hide();

    download_button_ = new QPushButton(tr("Download"), this);
    download_button_->setDefault(false);
    pause_button_ = new QPushButton(tr("Pause"), this);
    cancel_button_ = new QPushButton(tr("Cancel download"), this);
    auto* token_button = new QPushButton(tr("Hub and token…"), this);
    token_button->setToolTip(tr("The hub's address, and an access token for gated models such as Llama 3"));
    auto* close = new QPushButton(tr("Close"), this);

    auto* search_row = new QHBoxLayout;
    search_row->addWidget(query_, 1);
    search_row->addWidget(kind_);
    search_row->addWidget(search_button);
    auto* details = new QVBoxLayout;
    details->addWidget(title_);
    details->addWidget(size_);
    details->addWidget(fit_);
    details->addStretch();
    details->addWidget(progress_);
    details->addWidget(status_);
    auto* middle = new QHBoxLayout;
    middle->addWidget(results_, 3);
    middle->addLayout(details, 2);
    auto* buttons = new QHBoxLayout;
    buttons->addWidget(token_button);
    buttons->addStretch();
    buttons->addWidget(cancel_button_);
    buttons->addWidget(pause_button_);
    buttons->addWidget(download_button_);
    buttons->addWidget(close);
    auto* layout = new QVBoxLayout(this);
    auto* where = new QLabel(tr("Models go into the Hugging Face cache (%1), where transformers, LMDeploy and vLLM find them "
                                "too. Only safetensors weights, configs and tokenizer files are fetched.")
                                 .arg(QString::fromStdString(hf_hub_cache_dir().string())),
                             this);
    where->setWordWrap(true);
    layout->addLayout(search_row);
    layout->addWidget(where);
    layout->addLayout(middle, 1);
    layout->addLayout(buttons);

    connect(query_, &QLineEdit::returnPressed, this, [this] { search(query_->text()); });
    connect(search_button, &QPushButton::clicked, this, [this] { search(query_->text()); });
    connect(kind_, &QComboBox::currentIndexChanged, this, [this] { search(query_->text()); });
    connect(results_, &QTableWidget::currentCellChanged, this, [this](int row) {
        if (row >= 0 && results_->item(row, 0)) choose(results_->item(row, 0)->text());
    });
    connect(download_button_, &QPushButton::clicked, this, &GetModelsDialog::download);
    connect(pause_button_, &QPushButton::clicked, this, &GetModelsDialog::pause);
    connect(cancel_button_, &QPushButton::clicked, this, &GetModelsDialog::cancel_download);
    connect(token_button, &QPushButton::clicked, this, &GetModelsDialog::hub_settings);
    connect(close, &QPushButton::clicked, this, &QDialog::reject);
    // A token given in the app wins over HF_TOKEN and huggingface-cli's file.
    if (settings_.hub_token_store() == "settings") token_ = settings_.hub_token_in_settings();
    make_api();
    if (settings_.hub_token_store() == "keychain")
        keychain_read(kTokenKey, this, [this](const QString& secret, const QString& error, bool) {
            if (!error.isEmpty() || secret.isEmpty()) return;
            token_ = secret;
            make_api();
        });
    size_->setText(tr("Choose a model to see its size and whether it fits this computer."));
    search({});
    update_buttons();
    query_->setFocus();
}

GetModelsDialog::~GetModelsDialog() = default;

void GetModelsDialog::make_api() {
    if (api_) api_->deleteLater();
    api_ = new hub::HubApi(endpoint_, token_, this);
    connect(api_, &hub::HubApi::found, this, [this](const QList<hub::SearchHit>& hits) { show_hits(hits, false); });
    connect(api_, &hub::HubApi::info, this, &GetModelsDialog::show_info);
    connect(api_, &hub::HubApi::failed, this, [this](const QString& why) {
        status_->setText(why);
        if (!chosen_.isEmpty() && info_.id.isEmpty()) {
            size_->setText(why);
            emit details_shown(chosen_);
        }
        emit results_shown(results_->rowCount());
    });
}

void GetModelsDialog::reject() {
    // Closing stops a download; it resumes from where it stopped the next time.
    if (download_ && QMessageBox::question(this, tr("Stop the download?"),
                                           tr("Closing stops downloading %1. What arrived is kept, and downloading it again "
                                              "continues from there.")
                                               .arg(info_.id)) != QMessageBox::Yes)
        return;
    if (download_) pause();
    QDialog::reject();
}

void GetModelsDialog::search(const QString& text) {
    if (query_->text() != text) query_->setText(text);
    const QString filter = kind_->currentData().toString();
    if (text.trimmed().isEmpty()) {
        QList<hub::SearchHit> hits;
        for (const Suggestion& s : kSuggested) {
            if ((filter == "image-text-to-text" && !s.vision) || (filter == "text-generation" && s.vision)) continue;
            hits << hub::SearchHit{s.id, -1, 0, s.vision ? "image-text-to-text" : "text-generation", {}, s.gated};
        }
        show_hits(hits, true);
        return;
    }
    status_->setText(tr("Searching…"));
    api_->search(text.trimmed(), filter, 50);
}

void GetModelsDialog::show_hits(const QList<hub::SearchHit>& hits, bool suggested) {
    status_->setText(suggested ? tr("Suggested: models that run well in Lumen. Search for others.")
                               : hits.isEmpty() ? tr("Nothing found.") : QString());
    results_->setRowCount(0);
    for (const hub::SearchHit& h : hits) {
        const int row = results_->rowCount();
        results_->insertRow(row);
        results_->setItem(row, 0, new QTableWidgetItem(h.id));
        results_->setItem(row, 1, new QTableWidgetItem(input_kind(h.pipeline_tag) + (h.gated ? tr(" · gated") : QString())));
        auto* downloads = new QTableWidgetItem(h.downloads >= 0 ? short_count(h.downloads) : QString());
        downloads->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
        results_->setItem(row, 2, downloads);
    }
    results_->resizeColumnToContents(1);
    emit results_shown(results_->rowCount());
}

void GetModelsDialog::choose(const QString& repo_id) {
    if (repo_id == chosen_ && !info_.id.isEmpty()) return;
    chosen_ = repo_id;
    info_ = {};
    title_->setText(repo_id);
    size_->setText(tr("Asking the hub for its files…"));
    fit_->clear();
    update_buttons();
    api_->repo_info(repo_id);
}

void GetModelsDialog::show_info(const hub::RepoInfo& info) {
    if (info.id != chosen_) return;  // an answer for a model chosen before
    info_ = info;
    qint64 total = 0, present = 0;
    int files = 0;
    weights_bytes_ = 0;
    const hub::RepoCache cache(hf_hub_cache_dir(), info.id.toStdString());
    for (const hub::RepoFile& f : hub::files_to_fetch(info.files)) {
        ++files;
        total += f.size;
        if (f.path.endsWith(".safetensors")) weights_bytes_ += double(f.size);
        std::error_code ec;
        if (std::filesystem::file_size(cache.blob(f.etag.toStdString()), ec) == std::uintmax_t(f.size) && !ec) present += f.size;
    }
    if (weights_bytes_ == 0) {
        size_->setText(tr("It has no safetensors weights: Lumen does not load .bin or .pt files, which can run code when opened."));
        update_buttons();
        emit details_shown(info.id);
        return;
    }
    QString text = (files == 1 ? tr("1 file") : tr("%1 files").arg(files)) + ", " + byte_size((unsigned long long)(total));
    if (present == total) text += tr(" · already downloaded");
    else if (present > 0) text += tr(" · %1 already here").arg(byte_size((unsigned long long)(present)));
    if (!info.gated.isEmpty())
        text += "\n" + (token_.isEmpty() ? tr("Gated: accept its licence on the hub and set a token (Hub and token…) first.")
                                         : tr("Gated: its licence must be accepted on the hub for your token."));
    size_->setText(text);
    update_buttons();
    // config.json says what the model is and how much memory its context takes.
    QNetworkReply* reply = api_->network().get(api_->request(endpoint_ + "/" + info.id + "/resolve/" + info.commit + "/config.json"));
    connect(reply, &QNetworkReply::finished, this, [this, reply, id = info.id] {
        reply->deleteLater();
        if (id != chosen_) return;
        if (reply->error() != QNetworkReply::NoError) fit_->setText(api_->explain(reply, id));
        else show_fit(reply->readAll());
        update_buttons();
        emit details_shown(id);
    });
}

void GetModelsDialog::show_fit(const QByteArray& config_json) {
    ModelConfig config;
    try {
        config = parse_model_config(config_json.toStdString(), chosen_.toStdString() + "/config.json");
    } catch (const std::exception& e) {
        fit_->setText("<b>" + tr("Lumen cannot run this model.").toHtmlEscaped() + "</b> " + QString::fromStdString(e.what()).toHtmlEscaped());
        info_.files.clear();  // nothing to download
        return;
    }
    // The weights as stored, the keys and values of one conversation of up to 4,096 tokens, and
    // room for the work buffers.
    const TextConfig& t = config.text;
    const double per_token = 2.0 * double(t.num_layers * t.num_kv_heads * t.head_dim);
    const double context = double(std::min<int64_t>(t.max_position_embeddings > 0 ? t.max_position_embeddings : 4096, 4096));
    const double gpu_need = weights_bytes_ + per_token * 2.0 * context + 1.0e9;
    const double cpu_need = weights_bytes_ + per_token * 4.0 * context + 0.5e9;
    const auto gpus = list_gpus();
    const double gpu_free = gpus.empty() ? 0.0 : double(gpus.front().free_memory);
    const double ram_free = double(available_system_memory());
    auto size = [](double b) { return byte_size((unsigned long long)(b)); };
    const QString kind = config.is_vision_language() ? tr("Vision and text model") : tr("Text model");
    QString verdict;
    if (!gpus.empty() && gpu_need <= gpu_free)
        verdict = "<span style='color:#2e7d32'>●</span> " + tr("Fits on your GPU: about %1 of %2 free.").arg(size(gpu_need), size(gpu_free));
    else if (cpu_need <= ram_free)
        verdict = "<span style='color:#b26a00'>●</span> " +
                  (gpus.empty() ? tr("Runs on the CPU: about %1 of %2 free memory (slower than on a GPU).").arg(size(cpu_need), size(ram_free))
                                : tr("Too big for your GPU (about %1, %2 free); fits in memory to run on the CPU, slowly.")
                                      .arg(size(gpu_need), size(gpu_free)));
    else
        verdict = "<span style='color:#c62828'>●</span> " +
                  tr("Does not fit: it needs about %1, and this computer has %2 free%3.")
                      .arg(size(std::min(gpu_need, cpu_need)), size(ram_free),
                           gpus.empty() ? QString() : tr(" (GPU: %1)").arg(size(gpu_free)));
    fit_->setText(kind.toHtmlEscaped() + ", " + QString::fromStdString(config.architecture).toHtmlEscaped() + "<br>" + verdict);
}

void GetModelsDialog::download() {
    if (download_ || info_.files.isEmpty() || weights_bytes_ == 0) return;
    paused_ = false;
    start_download();
}

void GetModelsDialog::start_download() {
    download_ = new hub::HubDownload(info_.id, "main", hf_hub_cache_dir(), endpoint_, token_, this);
    progress_->setValue(0);
    progress_->show();
    status_->setText(tr("Starting…"));
    connect(download_, &hub::HubDownload::progress, this, [this](qint64 done, qint64 total, double speed, const QString&) {
        progress_->setValue(total > 0 ? int(1000 * done / total) : 0);
        QString s = tr("%1 of %2").arg(byte_size((unsigned long long)(done)), byte_size((unsigned long long)(total)));
        if (speed > 0 && done < total)
            s += " · " + tr("%1/s").arg(byte_size((unsigned long long)(speed))) + " · " + tr("%1 left").arg(time_text(double(total - done) / speed));
        status_->setText(s);
    });
    connect(download_, &hub::HubDownload::finished, this, [this](const QString& error) {
        hub::HubDownload* d = download_;
        download_ = nullptr;
        d->deleteLater();
        if (paused_) {
            status_->setText(tr("Paused. What arrived is kept; Resume continues from there."));
        } else if (error.isEmpty()) {
            progress_->setValue(1000);
            status_->setText(tr("Downloaded. %1 is in the model list.").arg(info_.id));
            emit downloaded(QString::fromStdString(d->snapshot().string()));
        } else {
            status_->setText(error);
            emit download_failed(error);
        }
        update_buttons();
    });
    download_->start();
    update_buttons();
}

void GetModelsDialog::pause() {
    if (download_) {
        paused_ = true;
        download_->cancel();
    } else if (paused_) {
        paused_ = false;
        start_download();
    }
}

void GetModelsDialog::cancel_download() {
    paused_ = false;
    if (download_) {
        paused_ = true;  // quietly: the message below says what happened
        download_->cancel();
    }
    // What arrived of unfinished files goes; finished files stay in the cache for a later download.
    const hub::RepoCache cache(hf_hub_cache_dir(), info_.id.toStdString());
    for (const hub::RepoFile& f : info_.files) {
        std::error_code ec;
        std::filesystem::remove(cache.incomplete(f.etag.toStdString()), ec);
    }
    paused_ = false;
    progress_->hide();
    status_->setText(tr("Cancelled."));
    update_buttons();
}

void GetModelsDialog::hub_settings() {
    QDialog ask(this);
    ask.setWindowTitle(tr("Hugging Face"));
    auto* address = new QLineEdit(endpoint_, &ask);
    address->setAccessibleName(tr("Hub address"));
    address->setPlaceholderText("https://huggingface.co");
    auto* token = new QLineEdit(&ask);
    token->setEchoMode(QLineEdit::Password);
    token->setAccessibleName(tr("Access token"));
    token->setPlaceholderText(token_.isEmpty() ? tr("None") : tr("Unchanged"));
    auto* forget = new QCheckBox(tr("Forget the token saved in Lumen"), &ask);
    forget->setVisible(!settings_.hub_token_store().isEmpty());
    auto* note = new QLabel(tr("The token (huggingface.co/settings/tokens; read access is enough) lets Lumen fetch gated "
                               "models whose licence you accepted on their page. Without one here, Lumen uses HF_TOKEN or "
                               "the token `huggingface-cli login` saved. The address is for mirrors (HF_ENDPOINT)."),
                            &ask);
    note->setWordWrap(true);
    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, &ask);
    auto* form = new QFormLayout;
    form->addRow(tr("Address:"), address);
    form->addRow(tr("Token:"), token);
    form->addRow({}, forget);
    auto* layout = new QVBoxLayout(&ask);
    layout->addWidget(note);
    layout->addLayout(form);
    layout->addWidget(buttons);
    connect(buttons, &QDialogButtonBox::accepted, &ask, &QDialog::accept);
    connect(buttons, &QDialogButtonBox::rejected, &ask, &QDialog::reject);
    ask.resize(520, ask.sizeHint().height());
    if (ask.exec() != QDialog::Accepted) return;

    QString url = address->text().trimmed();
    while (url.endsWith('/')) url.chop(1);
    if (url.isEmpty()) url = QString::fromStdString(hub::default_endpoint());
    settings_.set_hub_endpoint(url == QString::fromStdString(hub::default_endpoint()) ? QString() : url);
    endpoint_ = url;
    const QString given = token->text().trimmed();
    if (forget->isChecked() && given.isEmpty()) {
        keychain_delete(kTokenKey);
        settings_.set_hub_token({}, {});
        token_ = QString::fromStdString(hub::default_token());
    } else if (!given.isEmpty()) {
        token_ = given;
        keychain_write(kTokenKey, given, this, [this, given](const QString& error) {
            if (error.isEmpty()) {
                settings_.set_hub_token("keychain", {});
                return;
            }
            settings_.set_hub_token("settings", given);
            if (isVisible())
                QMessageBox::warning(this, tr("The token is not in a keychain"),
                                 tr("No keychain took the token (%1), so it is kept in Lumen's settings file, %2, where anyone "
                                    "who can read your files can read it.")
                                     .arg(error, settings_.file_name()));
        });
    }
    make_api();
    // Asked again with the new address or token: a gated model's files may show now.
    if (!chosen_.isEmpty()) {
        const QString again = chosen_;
        chosen_.clear();
        info_ = {};
        choose(again);
    }
}

void GetModelsDialog::update_buttons() {
    const bool can = !info_.files.isEmpty() && weights_bytes_ > 0;
    download_button_->setEnabled(can && !download_ && !paused_);
    download_button_->setDefault(can);
    pause_button_->setVisible(download_ || paused_);
    pause_button_->setText(paused_ && !download_ ? tr("Resume") : tr("Pause"));
    cancel_button_->setVisible(download_ || paused_);
}

}  // namespace lumen::ui
