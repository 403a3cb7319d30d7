#include "ui/settings_dialog.h"

#include <QComboBox>
#include <QDialogButtonBox>
#include <QDoubleSpinBox>
#include <QFormLayout>
#include <QLabel>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QTabWidget>
#include <QVBoxLayout>

namespace lumen::ui {
namespace {

double value_or(const QJsonObject& o, const QJsonObject& d, const char* key, double fallback) {
    if (o.contains(key)) return o.value(key).toDouble();
    if (d.contains(key)) return d.value(key).toDouble();
    return fallback;
}

}  // namespace

SettingsDialog::SettingsDialog(AppSettings& settings, const QString& model_path, const ConversationSettings& conversation,
                               const QJsonObject& defaults, bool gpu_available, QWidget* parent)
    : QDialog(parent) {
    setWindowTitle(tr("Settings"));
    auto* tabs = new QTabWidget(this);

    if (!model_path.isEmpty()) {
        const ModelSettings m = settings.model_settings(model_path);
        auto* page = new QWidget(tabs);
        auto* form = new QFormLayout(page);
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
        cache_share_->setToolTip(tr("The share of the memory left free after the weights that the KV cache takes"));
        compute_ = new QComboBox(page);
        compute_->addItem(tr("As stored (16-bit on a GPU, 32-bit on the CPU)"), "auto");
        if (gpu_available) compute_->addItem(tr("32-bit (slower; for checking)"), "float32");
        compute_->setCurrentIndex(std::max(0, compute_->findData(m.compute)));
        auto* weights = new QLabel(tr("As stored in the model folder"), page);
        form->addRow(tr("Device:"), device_);
        form->addRow(tr("Context length:"), session_len_);
        form->addRow(tr("KV cache share:"), cache_share_);
        form->addRow(tr("Weights:"), weights);
        form->addRow(tr("Activations and KV cache:"), compute_);
        form->addRow(new QLabel(tr("Changes apply when the model is loaded again."), page));
        tabs->addTab(page, tr("Model"));
    }

    auto* chat = new QWidget(tabs);
    auto* form = new QFormLayout(chat);
    system_ = new QPlainTextEdit(conversation.system_prompt, chat);
    system_->setPlaceholderText(tr("The model's default"));
    system_->setMaximumHeight(100);
    system_->setAccessibleName(tr("System prompt"));
    const QJsonObject& s = conversation.sampling;
    temperature_ = new QDoubleSpinBox(chat);
    temperature_->setRange(0, 5);
    temperature_->setSingleStep(0.05);
    temperature_->setSpecialValueText(tr("0 (greedy)"));
    temperature_->setValue(value_or(s, defaults, "temperature", 0.7));
    top_p_ = new QDoubleSpinBox(chat);
    top_p_->setRange(0.01, 1);
    top_p_->setSingleStep(0.05);
    top_p_->setValue(value_or(s, defaults, "top_p", 1.0));
    top_k_ = new QSpinBox(chat);
    top_k_->setRange(0, 1000);
    top_k_->setSpecialValueText(tr("Off"));
    top_k_->setValue(int(value_or(s, defaults, "top_k", 0)));
    repetition_ = new QDoubleSpinBox(chat);
    repetition_->setRange(0.5, 2);
    repetition_->setSingleStep(0.05);
    repetition_->setValue(value_or(s, defaults, "repetition_penalty", 1.0));
    max_new_ = new QSpinBox(chat);
    max_new_->setRange(1, 1 << 20);
    max_new_->setValue(int(value_or(s, defaults, "max_new_tokens", 1024)));
    seed_ = new QSpinBox(chat);
    seed_->setRange(0, 2147483647);
    seed_->setSpecialValueText(tr("Random"));
    seed_->setValue(int(value_or(s, defaults, "seed", 0)));
    auto* reset = new QPushButton(tr("Use the model's defaults"), chat);
    form->addRow(tr("System prompt:"), system_);
    temperature_->setAccessibleName(tr("Temperature"));
    form->addRow(tr("Temperature:"), temperature_);
    top_p_->setAccessibleName(tr("Top-p"));
    form->addRow(tr("Top-p:"), top_p_);
    top_k_->setAccessibleName(tr("Top-k"));
    form->addRow(tr("Top-k:"), top_k_);
    repetition_->setAccessibleName(tr("Repetition penalty"));
    form->addRow(tr("Repetition penalty:"), repetition_);
    max_new_->setAccessibleName(tr("Longest reply"));
    form->addRow(tr("Longest reply:"), max_new_);
    seed_->setAccessibleName(tr("Seed"));
    form->addRow(tr("Seed:"), seed_);
    form->addRow(reset);
    tabs->addTab(chat, tr("Conversation"));
    connect(reset, &QPushButton::clicked, this, [this, defaults] {
        temperature_->setValue(defaults.value("temperature").toDouble(0.7));
        top_p_->setValue(defaults.value("top_p").toDouble(1.0));
        top_k_->setValue(defaults.value("top_k").toInt(0));
        repetition_->setValue(defaults.value("repetition_penalty").toDouble(1.0));
        max_new_->setValue(1024);
        seed_->setValue(0);
    });

    auto* look = new QWidget(tabs);
    auto* look_form = new QFormLayout(look);
    theme_ = new QComboBox(look);
    theme_->addItem(tr("Follow the system"), "system");
    theme_->addItem(tr("Light"), "light");
    theme_->addItem(tr("Dark"), "dark");
    theme_->setCurrentIndex(std::max(0, theme_->findData(settings.theme())));
    look_form->addRow(tr("Appearance:"), theme_);
    tabs->addTab(look, tr("Appearance"));

    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, this);
    connect(buttons, &QDialogButtonBox::accepted, this, &QDialog::accept);
    connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
    auto* layout = new QVBoxLayout(this);
    layout->addWidget(tabs);
    layout->addWidget(buttons);
}

ModelSettings SettingsDialog::model_settings() const {
    ModelSettings m;
    if (!device_) return m;
    m.device = device_->currentData().toString();
    m.session_len = session_len_->value();
    m.cache_share = cache_share_->value();
    m.compute = compute_->currentData().toString();
    return m;
}

ConversationSettings SettingsDialog::conversation_settings() const {
    QJsonObject s{{"temperature", temperature_->value()},
                  {"top_p", top_p_->value()},
                  {"top_k", top_k_->value()},
                  {"repetition_penalty", repetition_->value()},
                  {"max_new_tokens", max_new_->value()},
                  {"seed", seed_->value()}};
    return {system_->toPlainText(), s};
}

QString SettingsDialog::theme() const { return theme_->currentData().toString(); }

}  // namespace lumen::ui
