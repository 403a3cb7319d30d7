#pragma once
// Splits a reply into prose and fenced code blocks, so prose renders as Markdown and code as
// monospace blocks with a copy button. Works on unfinished text: an open fence is a code block
// that is still being written.
#include <QList>
#include <QString>

namespace lumen::ui {

struct Segment {
    enum class Kind { Prose, Code };
    Kind kind = Kind::Prose;
    QString text;      // the prose, or the code without its fences
    QString language;  // after the opening fence, for code
    bool open = false; // code whose closing fence has not arrived
};

QList<Segment> split_markdown(const QString& text);

}  // namespace lumen::ui
