#include "ui/settings_dialog.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDialogButtonBox>
#include <QDir>
#include <QDoubleSpinBox>
#include <QFile>
#include <QFormLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QStandardItemModel>
#include <QTabWidget>
#include <QVBoxLayout>

#include "engine/model/model_config.h"
#include "engine/model/weight_formats.h"
#include "engine/backend/device.h"
#include "ui/model_list_model.h"

namespace lumen::ui {
namespace {

QString size_text(double bytes) { return byte_size((unsigned long long)(bytes)); }

// What the model takes with one conversation as long as `context`: its weight files, and the keys
// and values of every layer for each token (32-bit on the CPU, as stored on a GPU).
struct MemoryNeed {
    double weights = 0, per_token = 0;  // per_token: values of keys and values per token
    int64_t own_context = 0, head_dim = 0;
    double linear_parameters = 0;  // of the language model's products: what quantizing at load shrinks
    std::string stored;            // "16-bit", or how the folder is quantized
    bool vision = false;           // a vision-language model
};

MemoryNeed memory_need(const QString& model_path) {
    MemoryNeed need;
    try {
        const ModelConfig c = load_model_config(model_path.toStdString());
        need.per_token = 2.0 * double(c.text.num_layers * c.text.num_kv_heads * c.text.head_dim);
        need.own_context = c.text.max_position_embeddings;
        need.head_dim = c.text.head_dim;
        const TextConfig& t = c.text;
        const double q = double(t.num_heads * t.head_dim), kv = double(t.num_kv_heads * t.head_dim), h = double(t.hidden_size);
        need.linear_parameters = double(t.num_layers) * (h * (q + 2 * kv) + q * h + 3 * h * double(t.intermediate_size));
        need.stored = load_quantization(model_path.toStdString(), c.raw).label();
        need.vision = c.is_vision_language();
    } catch (const std::exception&) {
        return need;  // the model picker says what is wrong with the folder
    }
    for (const QFileInfo& f : QDir(model_path).entryInfoList({"*.safetensors"}, QDir::Files)) need.weights += double(f.size());
    return need;
}

// FP8 products need an Ada or Hopper GPU: the combo's "fp8" item is offered there, and elsewhere
// shown disabled with the reason.
void fp8_where_it_runs(QComboBox* combo, const std::vector<DeviceInfo>& gpus) {
    if (!gpus.empty() && runs_fp8(gpus.front())) return;
    const int fp8 = combo->findData("fp8");
    if (auto* items = qobject_cast<QStandardItemModel*>(combo->model())) items->item(fp8)->setEnabled(false);
    DeviceInfo cpu;
    cpu.id = "cpu";
    combo->setItemData(fp8, QString::fromStdString(fp8_unsupported_message(gpus.empty() ? cpu : gpus.front())), Qt::ToolTipRole);
}

}  // namespace

SettingsDialog::SettingsDialog(AppSettings& settings, const QString& model_path, const ConversationSettings& conversation,
                               const ChatSampling& defaults, bool gpu_available, uint64_t gpu_free_bytes, bool for_new_chat,
                               QWidget* parent)
    : QDialog(parent) {
    setWindowTitle(tr("Settings"));
    auto* tabs = new QTabWidget(this);

    if (!model_path.isEmpty()) {
        const ModelSettings m = settings.model_settings(model_path);
        auto* page = new QWidget(tabs);
        auto* form = new QFormLayout(page);
        auto* about = new QLabel(tr("How %1 runs on this computer. Changes apply when it is loaded again.")
                                     .arg(QDir(model_path).dirName()), page);
        about->setWordWrap(true);
        form->addRow(about);
        device_ = new QComboBox(page);
        device_->addItem(tr("Automatic (the GPU when there is one)"), "auto");
        if (gpu_available) device_->addItem(tr("NVIDIA GPU (CUDA)"), "cuda");
        device_->addItem(tr("CPU"), "cpu");
        device_->setCurrentIndex(std::max(0, device_->findData(m.device)));
        session_len_ = new QSpinBox(page);
        session_len_->setRange(0, 1 << 20);
        session_len_->setSpecialValueText(tr("The model's own"));
        session_len_->setSuffix(tr(" tokens"));
        session_len_->setValue(int(m.session_len));
        cache_share_ = new QDoubleSpinBox(page);
        cache_share_->setRange(0.05, 0.95);
        cache_share_->setSingleStep(0.05);
        cache_share_->setValue(m.cache_share);
        cache_share_->setToolTip(tr("How much of the GPU memory left after the model's weights holds conversations: more "
                                    "lets more and longer conversations stay in memory at once"));
        compute_ = new QComboBox(page);
        compute_->addItem(tr("As stored (16-bit)"), "auto");
        compute_->addItem(tr("32-bit (slower; for checking)"), "float32");
        compute_->setCurrentIndex(std::max(0, compute_->findData(m.compute)));
        const MemoryNeed need = memory_need(model_path);
        const std::vector<DeviceInfo> gpus = gpu_available ? list_gpus() : std::vector<DeviceInfo>{};
        weights_ = new QComboBox(page);
        weights_->setAccessibleName(tr("Weights"));
        if (need.stored == "16-bit" || need.stored.empty()) {
            weights_->addItem(tr("As stored (16-bit)"), "auto");
            weights_->addItem(tr("8-bit, made when loaded (half the memory)"), "int8");
            weights_->addItem(tr("4-bit, made when loaded (a quarter of the memory, faster on a GPU)"), "int4");
            weights_->addItem(tr("FP8, made when loaded (half the memory, close to 16-bit quality)"), "fp8");
            fp8_where_it_runs(weights_, gpus);
            weights_->setToolTip(tr("Smaller weights leave more memory for conversations and decode faster on a GPU, at some "
                                    "cost in quality (8-bit: hardly any; 4-bit: some). The files on disk stay as they are."));
        } else {
            weights_->addItem(tr("As stored (%1)").arg(QString::fromStdString(need.stored)), "auto");
            weights_->setEnabled(false);
            weights_->setToolTip(tr("This folder is already quantized"));
        }
        weights_->setCurrentIndex(std::max(0, weights_->findData(m.weights)));
        if (need.vision) {
            vision_ = new QComboBox(page);
            vision_->setAccessibleName(tr("Image reading"));
            vision_->addItem(tr("As stored (16-bit)"), "auto");
            vision_->addItem(tr("FP8 (reads images faster, nearly the same answers)"), "fp8");
            fp8_where_it_runs(vision_, gpus);
            vision_->setToolTip(tr("How the model's image encoder computes when it reads an attached image or screenshot."));
            vision_->setCurrentIndex(std::max(0, vision_->findData(m.vision)));
        }
        kv_cache_ = new QComboBox(page);
        kv_cache_->setAccessibleName(tr("KV cache"));
        kv_cache_->addItem(tr("16-bit"), 0);
        kv_cache_->addItem(tr("8-bit (twice the conversation memory)"), 8);
        kv_cache_->addItem(tr("4-bit (four times, at some cost in quality)"), 4);
        kv_cache_->setToolTip(tr("How the model remembers the conversation so far. Fewer bits hold more and longer "
                                 "conversations in the same memory and answer long ones faster on a GPU; 8-bit changes "
                                 "replies hardly at all."));
        kv_cache_->setCurrentIndex(std::max(0, kv_cache_->findData(m.kv_bits)));
        memory_ = new QLabel(page);
        memory_->setWordWrap(true);
        memory_->setAccessibleName(tr("Memory estimate"));
        if (gpu_available) {
            form->addRow(tr("Runs on:"), device_);
        } else {
            device_->hide();  // one real choice: said, not offered
            form->addRow(tr("Runs on:"), new QLabel(tr("The CPU (no NVIDIA GPU was found)"), page));
        }
        form->addRow(tr("Weights:"), weights_);
        if (vision_) form->addRow(tr("Image reading:"), vision_);
        form->addRow(tr("KV cache:"), kv_cache_);
        form->addRow(tr("Context length:"), session_len_);
        // The GPU's own choices are offered only where there is a GPU.
        if (gpu_available) {
            form->addRow(tr("GPU memory for conversations:"), cache_share_);
            form->addRow(tr("GPU precision:"), compute_);
        } else {
            cache_share_->hide();
            compute_->hide();
        }
        form->addRow(tr("Memory:"), memory_);
        auto update_memory = [this, need, gpu_available, gpu_free_bytes] {
            const bool gpu = gpu_available && device_->currentData().toString() != "cpu";
            const int64_t context = session_len_->value() > 0 ? session_len_->value() : need.own_context;
            // Per token: keys and values of every layer and head, or their codes and a 16-bit scale and
            // zero per head.
            const int bits = kv_cache_->currentData().toInt();
            const double bytes = bits ? bits / 8.0 : gpu && compute_->currentData().toString() != "float32" ? 2.0 : 4.0;
            const double per_token = need.per_token * bytes + (bits ? 4.0 * need.per_token / double(std::max<int64_t>(1, need.head_dim)) : 0.0);
            const double kv = per_token * double(context);
            // Quantized at load: the products' weights at 1 byte (8-bit) or half a byte and a scale and
            // zero per 128 (4-bit) instead of 2.
            const QString choice = weights_->currentData().toString();
            const double per_parameter = choice == "int8" || choice == "fp8" ? 1.0 : choice == "int4" ? 0.5 + 3.0 / 128 : 2.0;
            const double weights = std::max(0.0, need.weights - need.linear_parameters * (2.0 - per_parameter));
            QString text = tr("about %1: %2 of weights and %3 for a conversation of %4 tokens")
                               .arg(size_text(weights + kv), size_text(weights), size_text(kv))
                               .arg(context);
            const double free = gpu ? double(gpu_free_bytes) : double(available_system_memory());
            if (free > 0) {
                text += "\n" + (gpu ? tr("%1 of the GPU's memory is free now; what the weights leave, in the share set above, "
                                          "holds conversations")
                                     : tr("%1 of the computer's memory is free now"))
                                    .arg(size_text(free));
                if (weights + kv > free) text += " — " + tr("too little: choose a shorter context or smaller weights");
                else if (per_token > 0)
                    text += "\n" + tr("The KV cache holds about %L1 tokens")
                                       .arg(qint64(cache_share_->value() * (free - weights) / per_token));
            }
            memory_->setText(text);
        };
        update_memory();
        connect(session_len_, &QSpinBox::valueChanged, this, update_memory);
        connect(device_, &QComboBox::currentIndexChanged, this, update_memory);
        connect(compute_, &QComboBox::currentIndexChanged, this, update_memory);
        connect(weights_, &QComboBox::currentIndexChanged, this, update_memory);
        connect(kv_cache_, &QComboBox::currentIndexChanged, this, update_memory);
        connect(cache_share_, &QDoubleSpinBox::valueChanged, this, update_memory);
        tabs->addTab(page, tr("Model"));
    }

    auto* chat = new QWidget(tabs);
    auto* form = new QFormLayout(chat);
    auto* scope = new QLabel(for_new_chat ? tr("For the new chat: they stay with it once you send its first message.")
                                          : tr("For this conversation only."),
                             chat);
    scope->setWordWrap(true);
    form->addRow(scope);
    system_ = new QPlainTextEdit(conversation.system_prompt, chat);
    system_->setPlaceholderText(tr("The model's default"));
    system_->setMaximumHeight(100);
    system_->setAccessibleName(tr("System prompt"));
    temperature_ = new QDoubleSpinBox(chat);
    temperature_->setRange(0, 5);
    temperature_->setSingleStep(0.05);
    temperature_->setSpecialValueText(tr("0 (greedy)"));
    top_p_ = new QDoubleSpinBox(chat);
    top_p_->setRange(0.01, 1);
    top_p_->setSingleStep(0.05);
    min_p_ = new QDoubleSpinBox(chat);
    min_p_->setRange(0, 1);
    min_p_->setSingleStep(0.01);
    min_p_->setSpecialValueText(tr("Off"));
    min_p_->setToolTip(tr("Leaves out words far less likely than the likeliest one (at 0.05, those with under a "
                          "twentieth of its chance): replies stay sensible at a high temperature"));
    top_k_ = new QSpinBox(chat);
    top_k_->setRange(0, 1000);
    top_k_->setSpecialValueText(tr("Off"));
    repetition_ = new QDoubleSpinBox(chat);
    repetition_->setRange(0.5, 2);
    repetition_->setSingleStep(0.05);
    max_new_ = new QSpinBox(chat);
    max_new_->setRange(1, 1 << 20);
    seed_ = new QSpinBox(chat);
    seed_->setRange(0, 2147483647);
    seed_->setSpecialValueText(tr("Random"));
    auto show_sampling = [this](const ChatSampling& s) {
        temperature_->setValue(*s.temperature);
        top_p_->setValue(*s.top_p);
        min_p_->setValue(*s.min_p);
        top_k_->setValue(*s.top_k);
        repetition_->setValue(*s.repetition_penalty);
        max_new_->setValue(*s.max_new_tokens);
        seed_->setValue(int(*s.seed));
    };
    show_sampling(conversation.sampling.over(defaults).over(ChatSampling::fallback()));
    auto* reset = new QPushButton(tr("Use the model's defaults"), chat);
    form->addRow(tr("System prompt:"), system_);
    temperature_->setAccessibleName(tr("Temperature"));
    form->addRow(tr("Temperature:"), temperature_);
    top_p_->setAccessibleName(tr("Top-p"));
    form->addRow(tr("Top-p:"), top_p_);
    min_p_->setAccessibleName(tr("Min-p"));
    form->addRow(tr("Min-p:"), min_p_);
    top_k_->setAccessibleName(tr("Top-k"));
    form->addRow(tr("Top-k:"), top_k_);
    repetition_->setAccessibleName(tr("Repetition penalty"));
    form->addRow(tr("Repetition penalty:"), repetition_);
    max_new_->setAccessibleName(tr("Longest reply"));
    form->addRow(tr("Longest reply:"), max_new_);
    seed_->setAccessibleName(tr("Seed"));
    form->addRow(tr("Seed:"), seed_);
    form->addRow(reset);
    if (!model_path.isEmpty()) {
        preset_ = new QCheckBox(tr("Start new chats with %1 from these settings").arg(QDir(model_path).dirName()), chat);
        form->addRow(preset_);
    }
    tabs->addTab(chat, for_new_chat ? tr("New chat") : tr("This conversation"));
    connect(reset, &QPushButton::clicked, this, [defaults, show_sampling] {
        ChatSampling d = defaults;
        d.seed = 0;  // a preset's fixed seed is not the model's
        show_sampling(d.over(ChatSampling::fallback()));
    });

    auto* look = new QWidget(tabs);
    auto* look_form = new QFormLayout(look);
    theme_ = new QComboBox(look);
    theme_->addItem(tr("Follow the system"), "system");
    theme_->addItem(tr("Light"), "light");
    theme_->addItem(tr("Dark"), "dark");
    theme_->setCurrentIndex(std::max(0, theme_->findData(settings.theme())));
    look_form->addRow(new QLabel(tr("For the whole app."), look));
    look_form->addRow(tr("Theme:"), theme_);
    tabs->addTab(look, tr("Appearance"));

    const ServerSettings server = settings.server_settings();
    auto* serving = new QWidget(tabs);
    auto* serving_form = new QFormLayout(serving);
    auto* serving_about = new QLabel(tr("Other programs (editors, scripts, anything that speaks the OpenAI API) can use the "
                                        "loaded model while you chat with it."),
                                     serving);
    serving_about->setWordWrap(true);
    serving_form->addRow(serving_about);
    serve_ = new QCheckBox(tr("Serve the loaded model"), serving);
    serve_->setAccessibleName(tr("Serve the loaded model"));
    serve_->setChecked(server.enabled);
    port_ = new QSpinBox(serving);
    port_->setRange(0, 65535);
    port_->setSpecialValueText(tr("Any free port"));
    port_->setValue(server.port);
    port_->setAccessibleName(tr("Port"));
    network_ = new QCheckBox(tr("Let other computers on the network connect"), serving);
    network_->setChecked(server.network);
    api_key_ = new QLineEdit(server.api_key, serving);
    api_key_->setEchoMode(QLineEdit::PasswordEchoOnEdit);
    api_key_->setPlaceholderText(tr("None: anything that can connect may use the model"));
    api_key_->setAccessibleName(tr("API key"));
    auto* warning = new QLabel(serving);
    warning->setWordWrap(true);
    auto update_warning = [this, warning] {
        warning->setText(network_->isChecked() && api_key_->text().isEmpty()
                             ? tr("Without an API key anyone on the network can use the model.")
                             : QString());
    };
    update_warning();
    connect(network_, &QCheckBox::toggled, this, update_warning);
    connect(api_key_, &QLineEdit::textChanged, this, update_warning);
    serving_form->addRow(serve_);
    serving_form->addRow(tr("Port:"), port_);
    serving_form->addRow(network_);
    serving_form->addRow(tr("API key:"), api_key_);
    serving_form->addRow(warning);
    tabs->addTab(serving, tr("Server"));

    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, this);
    connect(buttons, &QDialogButtonBox::accepted, this, &QDialog::accept);
    connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
    auto* layout = new QVBoxLayout(this);
    layout->addWidget(tabs);
    layout->addWidget(buttons);
}

ServerSettings SettingsDialog::server_settings() const {
    return ServerSettings{serve_->isChecked(), port_->value(), network_->isChecked(), api_key_->text()};
}

ModelSettings SettingsDialog::model_settings() const {
    ModelSettings m;
    if (!device_) return m;
    m.device = device_->currentData().toString();
    m.session_len = session_len_->value();
    m.cache_share = cache_share_->value();
    m.compute = compute_->currentData().toString();
    m.weights = weights_->currentData().toString();
    m.kv_bits = kv_cache_->currentData().toInt();
    if (vision_) m.vision = vision_->currentData().toString();
    return m;
}

ConversationSettings SettingsDialog::conversation_settings() const {
    const ChatSampling s{.temperature = temperature_->value(),
                         .top_p = top_p_->value(),
                         .min_p = min_p_->value(),
                         .top_k = top_k_->value(),
                         .repetition_penalty = repetition_->value(),
                         .max_new_tokens = max_new_->value(),
                         .seed = seed_->value()};
    return {system_->toPlainText(), s};
}

bool SettingsDialog::use_for_new_chats() const { return preset_ && preset_->isChecked(); }

QString SettingsDialog::theme() const { return theme_->currentData().toString(); }

}  // namespace lumen::ui
