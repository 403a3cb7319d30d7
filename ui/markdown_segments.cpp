#include "ui/markdown_segments.h"

#include <QStringList>

namespace lumen::ui {

QList<Segment> split_markdown(const QString& text) {
    QList<Segment> out;
    Segment current;
    QStringList body;   // lines of the current segment
    QString fence;      // the opening fence ("```", "~~~~", ...) while inside code
    auto flush = [&] {
        current.text = body.join('\n');
        if (current.kind == Segment::Kind::Code || !current.text.trimmed().isEmpty()) out.push_back(current);
        current = Segment{};
        body.clear();
    };
    for (const QString& line : text.split('\n')) {
        const QString trimmed = line.trimmed();
        if (fence.isEmpty() && (trimmed.startsWith("```") || trimmed.startsWith("~~~"))) {
            flush();
            int n = 0;
            while (n < trimmed.size() && trimmed[n] == trimmed[0]) ++n;
            fence = trimmed.left(n);
            current.kind = Segment::Kind::Code;
            current.language = trimmed.mid(n).trimmed();
            current.open = true;
        } else if (!fence.isEmpty() && trimmed.startsWith(fence) && trimmed.mid(fence.size()).trimmed().isEmpty()) {
            current.open = false;
            fence.clear();
            flush();
        } else {
            body.push_back(line);
        }
    }
    flush();
    return out;
}

QStringList split_into_blocks(const QString& text, int chars) {
    QStringList out;
    qsizetype p = 0;
    while (text.size() - p > chars) {
        qsizetype cut = text.indexOf('\n', p + chars);
        qsizetype next = cut + 1;
        if (cut < 0 || cut > p + 2 * chars) {
            if (text.size() - p <= 2 * chars) break;
            cut = text.indexOf(' ', p + 2 * chars);
            next = cut + 1;
            if (cut < 0 || cut > p + 3 * chars) {
                cut = p + 2 * chars;
                if (text[cut - 1].isHighSurrogate()) ++cut;
                next = cut;
            }
        }
        out << text.mid(p, cut - p);
        p = next;
    }
    out << text.mid(p);
    return out;
}

namespace {

// A model's single line breaks are meant as line breaks: Markdown would join the lines.
QString keep_line_breaks(const QString& markdown) {
    QStringList lines = markdown.split('\n');
    for (qsizetype i = 0; i + 1 < lines.size(); ++i) {
        QString& l = lines[i];
        const QString t = l.trimmed();
        if (t.isEmpty() || lines[i + 1].trimmed().isEmpty() || t.startsWith('|') || l.endsWith("  ") || l.endsWith('\\'))
            continue;
        l += "  ";
    }
    return lines.join('\n');
}

}  // namespace

QStringList markdown_paragraphs(const QString& prose, int chars) {
    QStringList out;
    QStringList current;
    auto flush = [&] {
        const QString p = current.join('\n');
        current.clear();
        if (p.trimmed().isEmpty()) return;
        for (const QString& piece : split_into_blocks(p, chars)) out << keep_line_breaks(piece);
    };
    for (const QString& line : prose.split('\n')) {
        if (line.trimmed().isEmpty()) flush();
        else current << line;
    }
    flush();
    return out;
}

}  // namespace lumen::ui
