#include "ui/theme.h"

#include <QApplication>
#include <QPalette>
#include <QStyle>
#include <QStyleFactory>

namespace lumen::ui {
namespace {

QPalette dark_palette() {
    QPalette p;
    const QColor window(0x1f, 0x22, 0x27), base(0x17, 0x19, 0x1d), text(0xe6, 0xe8, 0xeb), muted(0x8a, 0x91, 0x9c);
    p.setColor(QPalette::Window, window);
    p.setColor(QPalette::WindowText, text);
    p.setColor(QPalette::Base, base);
    p.setColor(QPalette::AlternateBase, window);
    p.setColor(QPalette::ToolTipBase, base);
    p.setColor(QPalette::ToolTipText, text);
    p.setColor(QPalette::Text, text);
    p.setColor(QPalette::Button, QColor(0x2a, 0x2e, 0x35));
    p.setColor(QPalette::ButtonText, text);
    p.setColor(QPalette::Highlight, QColor(0x4c, 0x6e, 0xf5));
    p.setColor(QPalette::HighlightedText, Qt::white);
    p.setColor(QPalette::Link, QColor(0x74, 0x8f, 0xfc));
    p.setColor(QPalette::PlaceholderText, muted);
    for (auto role : {QPalette::WindowText, QPalette::Text, QPalette::ButtonText})
        p.setColor(QPalette::Disabled, role, muted);
    return p;
}

QPalette light_palette() {
    QPalette p = QStyleFactory::create("Fusion")->standardPalette();
    p.setColor(QPalette::Window, QColor(0xf6, 0xf7, 0xf9));
    p.setColor(QPalette::Highlight, QColor(0x3b, 0x5b, 0xdb));
    return p;
}

}  // namespace

void apply_theme(const QString& theme) {
    static const QString platform_style = QApplication::style()->name();
    static const QPalette platform_palette = QApplication::palette();
    if (theme == "dark" || theme == "light") {
        QApplication::setStyle(QStyleFactory::create("Fusion"));
        QApplication::setPalette(theme == "dark" ? dark_palette() : light_palette());
    } else {
        QApplication::setStyle(QStyleFactory::create(platform_style));
        QApplication::setPalette(platform_palette);
    }
    const QPalette p = QApplication::palette();
    const bool dark = p.color(QPalette::Window).lightness() < 128;
    // A focus ring that can be seen: text fields and lists take the highlight colour, two pixels
    // wide, when the keyboard is on them. The transcript draws its own colours (ChatView).
    const QString ring = p.color(QPalette::Highlight).name();
    const QString rest = dark ? "#3a3f47" : "#c9ced6";
    qApp->setStyleSheet(QString("QPlainTextEdit, QLineEdit, QListView, QTableView { border: 2px solid %1; border-radius: 5px; }"
                                "QPlainTextEdit:focus, QLineEdit:focus, QListView:focus, QTableView:focus { border-color: %2; }"
                                "QFrame#noticeBar { border: 1px solid %1; border-radius: 6px; }"
                                "QLabel#composerProblem { color: %3; }")
                            .arg(rest, ring, dark ? "#ff8787" : "#c92a2a"));
}

}  // namespace lumen::ui
