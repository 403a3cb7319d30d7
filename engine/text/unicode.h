#pragma once
// UTF-8 helpers for the tokenizers: code point iteration, validation, NFC, and the GPT-2 byte map.
#include <cstdint>
#include <string>
#include <string_view>

namespace lumen::unicode {

// Length in bytes of the UTF-8 sequence that starts with `lead`, or 0 for a byte that cannot start one.
int sequence_length(unsigned char lead);

// Decodes the code point at `s[i]` and advances i; a maximal invalid subpart decodes as one U+FFFD.
char32_t next_code_point(std::string_view s, std::size_t& i);

void append_utf8(std::string& out, char32_t cp);

// Replaces each maximal invalid subpart with U+FFFD, as Python's errors="replace" and Rust's
// from_utf8_lossy do.
std::string to_valid_utf8(std::string_view bytes);
bool is_valid_utf8(std::string_view bytes);

std::string nfc(std::string_view s);

// GPT-2's reversible byte <-> printable character map used by byte-level BPE.
const std::string& byte_to_unicode(unsigned char b);  // UTF-8 of the character standing for byte b
int unicode_to_byte(char32_t cp);                     // -1 for a character outside the map

// The Unicode White_Space property (what the reference regex engine's \s matches).
bool is_whitespace(char32_t cp);
// Rust regex's \w: Alphabetic, marks, decimal digits, connector punctuation, join controls.
bool is_word_char(char32_t cp);

}  // namespace lumen::unicode
