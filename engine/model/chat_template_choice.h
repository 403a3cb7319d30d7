#pragma once
#include "engine/model/model_config.h"
#include "engine/text/chat_template.h"

namespace lumen {

class Tokenizer;

// The chat template a model uses: InternVL's "template" field, else the tokenizer's Jinja template
// recognised, else the architecture's usual one. Throws when it cannot tell.
ChatTemplate chat_template_for(const ModelConfig& config, const Tokenizer& tokenizer);

}  // namespace lumen
