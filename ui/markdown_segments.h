#pragma once
// Splits a reply into prose and fenced code blocks, so prose renders as Markdown and code as
// monospace blocks with a copy button, and both into blocks the transcript lays out one by one. Works on unfinished text: an open fence is a code block
// that is still being written.
#include <QList>
#include <QString>
#include <QStringList>

namespace lumen::ui {

struct Segment {
    enum class Kind { Prose, Code };
    Kind kind = Kind::Prose;
    QString text;      // the prose, or the code without its fences
    QString language;  // after the opening fence, for code
    bool open = false; // code whose closing fence has not arrived
};

QList<Segment> split_markdown(const QString& text);

// Cuts text into pieces of about `chars` characters, at a line break past that (else at a space,
// else anywhere), so that the piece a stream grows stays cheap to lay out. A cut depends only on
// the text before it: the pieces a streaming reply already has stay as they are while it grows.
QStringList split_into_blocks(const QString& text, int chars);

// The paragraphs of prose (blank lines apart), each cut into blocks, with a model's single line
// breaks kept as line breaks (Markdown would join the lines).
QStringList markdown_paragraphs(const QString& prose, int chars);

}  // namespace lumen::ui
