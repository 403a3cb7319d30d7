#include "engine/text/unicode.h"

#include <array>
#include <mutex>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <vector>

#include "engine/util/error.h"

namespace lumen::unicode {

int sequence_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if (lead >= 0xc2 && lead <= 0xdf) return 2;
    if (lead >= 0xe0 && lead <= 0xef) return 3;
    if (lead >= 0xf0 && lead <= 0xf4) return 4;
    return 0;
}

namespace {

// The longest valid start of the UTF-8 sequence at s[i] (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF). Returns the bytes it covers and whether it is complete, so
// that a lossy decode replaces each maximal invalid subpart with one U+FFFD, as Python and Rust do.
struct SequenceCheck {
    int length;
    bool complete;
    char32_t code_point;
};

SequenceCheck check_sequence(std::string_view s, std::size_t i) {
    const auto lead = static_cast<unsigned char>(s[i]);
    const int n = sequence_length(lead);
    if (n == 0) return {1, false, 0};
    if (n == 1) return {1, true, lead};
    char32_t cp = lead & (n == 2 ? 0x1f : n == 3 ? 0x0f : 0x07);
    for (int k = 1; k < n; ++k) {
        if (i + std::size_t(k) >= s.size()) return {k, false, 0};
        const auto c = static_cast<unsigned char>(s[i + std::size_t(k)]);
        unsigned char lo = 0x80, hi = 0xbf;
        if (k == 1) {
            if (lead == 0xe0) lo = 0xa0;
            else if (lead == 0xed) hi = 0x9f;
            else if (lead == 0xf0) lo = 0x90;
            else if (lead == 0xf4) hi = 0x8f;
        }
        if (c < lo || c > hi) return {k, false, 0};
        cp = (cp << 6) | (c & 0x3f);
    }
    return {n, true, cp};
}

}  // namespace

char32_t next_code_point(std::string_view s, std::size_t& i) {
    const SequenceCheck c = check_sequence(s, i);
    i += std::size_t(c.length);
    return c.complete ? c.code_point : char32_t(0xfffd);
}

void append_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xc0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += char(0xe0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3f));
        out += char(0x80 | (cp & 0x3f));
    } else {
        out += char(0xf0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3f));
        out += char(0x80 | ((cp >> 6) & 0x3f));
        out += char(0x80 | (cp & 0x3f));
    }
}

std::string to_valid_utf8(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size());
    for (std::size_t i = 0; i < bytes.size();) {
        const SequenceCheck c = check_sequence(bytes, i);
        if (c.complete) out.append(bytes.substr(i, std::size_t(c.length)));
        else append_utf8(out, 0xfffd);
        i += std::size_t(c.length);
    }
    return out;
}

bool is_valid_utf8(std::string_view bytes) {
    for (std::size_t i = 0; i < bytes.size();) {
        const SequenceCheck c = check_sequence(bytes, i);
        if (!c.complete) return false;
        i += std::size_t(c.length);
    }
    return true;
}

std::string nfc(std::string_view s) {
    // ASCII is already in NFC; most prompts are, so skip ICU for them.
    bool ascii = true;
    for (char c : s)
        if (static_cast<unsigned char>(c) >= 0x80) {
            ascii = false;
            break;
        }
    if (ascii) return std::string(s);

    UErrorCode status = U_ZERO_ERROR;
    const UNormalizer2* norm = unorm2_getNFCInstance(&status);
    if (U_FAILURE(status)) throw Error("ICU NFC normaliser unavailable");
    const std::string valid = to_valid_utf8(s);
    int32_t len16 = 0;
    status = U_ZERO_ERROR;
    u_strFromUTF8(nullptr, 0, &len16, valid.data(), int32_t(valid.size()), &status);
    std::vector<UChar> src(std::size_t(len16) + 1);
    status = U_ZERO_ERROR;
    u_strFromUTF8(src.data(), len16 + 1, nullptr, valid.data(), int32_t(valid.size()), &status);
    std::vector<UChar> dst(std::size_t(len16) * 3 + 16);
    status = U_ZERO_ERROR;
    int32_t n = unorm2_normalize(norm, src.data(), len16, dst.data(), int32_t(dst.size()), &status);
    if (status == U_BUFFER_OVERFLOW_ERROR) {
        dst.resize(std::size_t(n) + 1);
        status = U_ZERO_ERROR;
        n = unorm2_normalize(norm, src.data(), len16, dst.data(), int32_t(dst.size()), &status);
    }
    if (U_FAILURE(status)) throw Error("NFC normalisation failed");
    std::string out(std::size_t(n) * 3 + 1, '\0');
    int32_t out_len = 0;
    status = U_ZERO_ERROR;
    u_strToUTF8(out.data(), int32_t(out.size()), &out_len, dst.data(), n, &status);
    if (U_FAILURE(status)) throw Error("NFC normalisation failed");
    out.resize(std::size_t(out_len));
    return out;
}

namespace {

struct ByteMap {
    std::array<std::string, 256> to_char;
    std::array<int, 324> from_cp{};  // the map uses code points below 0x144
};

const ByteMap& byte_map() {
    static const ByteMap map = [] {
        ByteMap m;
        m.from_cp.fill(-1);
        int extra = 0;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
            const char32_t cp = printable ? char32_t(b) : char32_t(256 + extra++);
            append_utf8(m.to_char[std::size_t(b)], cp);
            m.from_cp[cp] = b;
        }
        return m;
    }();
    return map;
}

}  // namespace

const std::string& byte_to_unicode(unsigned char b) { return byte_map().to_char[b]; }

int unicode_to_byte(char32_t cp) { return cp < 324 ? byte_map().from_cp[cp] : -1; }

bool is_whitespace(char32_t cp) {
    switch (cp) {
    case 0x09: case 0x0a: case 0x0b: case 0x0c: case 0x0d: case 0x20: case 0x85: case 0xa0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000:
        return true;
    default:
        return cp >= 0x2000 && cp <= 0x200a;
    }
}

bool is_word_char(char32_t cp) {
    const auto c = UChar32(cp);
    if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL)) return true;
    switch (u_charType(c)) {
    case U_NON_SPACING_MARK:
    case U_ENCLOSING_MARK:
    case U_COMBINING_SPACING_MARK:
    case U_DECIMAL_DIGIT_NUMBER:
    case U_CONNECTOR_PUNCTUATION:
        return true;
    default:
        return false;
    }
}

}  // namespace lumen::unicode
