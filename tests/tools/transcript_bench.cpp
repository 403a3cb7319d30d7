// Times the transcript (ui::ChatView) on its two hard cases, without a model: a reply that grows
// to 150,000 characters in steps of 300 (as a stream coalesced 33 times a second delivers it),
// each step drawn before the next; and a chat of 500 messages opened, drawn at its end, and paged
// through. Prints the slowest and the median step. A development tool, for docs/PERFORMANCE.md:
//   QT_QPA_PLATFORM=offscreen build/tests/transcript_bench
#include <QApplication>
#include <QElapsedTimer>
#include <QRandomGenerator>
#include <QScrollBar>
#include <algorithm>
#include <cstdio>
#include <vector>

#include "ui/chat_view.h"

using lumen::ui::ChatView;
using lumen::ui::TranscriptMessage;

namespace {

// Words of random length with a line break now and then and a blank line rarely: the shape of
// a long reply (a fixed seed, so every run draws the same text).
QString reply_text(int chars) {
    QRandomGenerator random(7);
    QString out;
    out.reserve(chars + 16);
    while (out.size() < chars) {
        const int letters = 2 + int(random.bounded(9));
        for (int i = 0; i < letters; ++i) out += QChar('a' + int(random.bounded(26)));
        const quint32 r = random.bounded(400);
        out += r == 0 ? "\n\n" : r < 6 ? "\n" : " ";
    }
    return out;
}

TranscriptMessage message(const QString& role, const QString& author, const QString& text) {
    TranscriptMessage m;
    m.role = role;
    m.author = author;
    m.text = text;
    return m;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

double draw(ChatView& view) {
    QElapsedTimer t;
    t.start();
    QCoreApplication::processEvents();
    view.viewport()->repaint();
    return double(t.nsecsElapsed()) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
    QApplication app(argc, argv);
    std::setvbuf(stdout, nullptr, _IONBF, 0);  // each line as it is measured
    {
        ChatView view;
        view.resize(1000, 760);
        view.show();
        view.add_message(message("user", "You", "Write without end"));
        const int reply = view.add_message(message("assistant", "Model", {}));
        const QString text = reply_text(150000);
        std::vector<double> steps;
        double worst = 0;
        for (int n = 300; n <= text.size(); n += 300) {
            QElapsedTimer t;
            t.start();
            view.set_text(reply, text.left(n));
            const double ms = double(t.nsecsElapsed()) / 1e6 + draw(view);
            steps.push_back(ms);
            worst = std::max(worst, ms);
            if (n % 30000 == 0) std::printf("reply at %6d characters: this step %.1f ms\n", n, ms);
        }
        std::printf("growing reply, %zu steps: median %.2f ms, slowest %.1f ms\n", steps.size(), median(steps), worst);
    }
    {
        ChatView view;
        view.resize(1000, 760);
        view.show();
        QElapsedTimer t;
        t.start();
        for (int i = 0; i < 500; ++i) {
            const bool user = i % 2 == 0;
            QString text = user ? QString("Question %1: how does part %1 of the plan work?").arg(i / 2)
                                : QString("Part %1 works in **three steps**.\n\nFirst, the input is read and checked; a line "
                                          "that is too long is cut.\nSecond, each record is parsed.\n\n")
                                          .arg(i / 2);
            if (!user && i % 10 == 1) text += "```cpp\nint main() {\n    return run(argc, argv);\n}\n```\n\n";
            if (!user) text += QString("Last, the results are written out (reply %1).").arg(i);
            view.add_message(message(user ? "user" : "assistant", user ? "You" : "Model", text));
        }
        const double open = double(t.nsecsElapsed()) / 1e6 + draw(view);
        std::vector<double> pages;
        view.verticalScrollBar()->setValue(0);
        while (view.verticalScrollBar()->value() < view.verticalScrollBar()->maximum()) {
            view.verticalScrollBar()->setValue(view.verticalScrollBar()->value() + view.verticalScrollBar()->pageStep());
            pages.push_back(draw(view));
        }
        std::printf("500 messages: added and drawn at the end in %.1f ms; %zu pages, median %.2f ms, slowest %.1f ms; "
                    "%d blocks laid out\n",
                    open, pages.size(), median(pages), *std::max_element(pages.begin(), pages.end()), view.laid_out_blocks());
    }
    return 0;
}
