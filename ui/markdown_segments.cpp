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

}  // namespace lumen::ui
