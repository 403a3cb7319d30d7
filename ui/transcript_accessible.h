#pragma once
// What screen readers see of the transcript (ChatView paints its messages itself): a list with
// one item per message, named by its author ("Your message", "Reply from <model>") and holding
// its text and how it ended.

namespace lumen::ui {

void install_transcript_accessibility();  // once; later calls do nothing

}  // namespace lumen::ui
