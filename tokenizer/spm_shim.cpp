/* The C API of tokenizer/spm.h over sentencepiece::SentencePieceProcessor. Every entry point
 * catches C++ exceptions (bad_alloc above all) so none crosses into C, and turns sentencepiece's
 * util::Status into an mg_status with the file named and a HINT. */
#include <sentencepiece_processor.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

extern "C" {
#include "tokenizer/spm.h"
}

struct mg_spm {
    sentencepiece::SentencePieceProcessor sp;
    std::string path;
};

static const char *LOAD_HINT =
    "tokenizer.model must be the SentencePiece model shipped with the checkpoint (for MedGemma: "
    "google/medgemma-4b-it/tokenizer.model); re-download it if it is truncated";

extern "C" mg_status mg_spm_load(const char *path, mg_spm **out) {
    *out = nullptr;
    // Tell a missing file (IO) from a file sentencepiece cannot parse (FORMAT).
    FILE *f = std::fopen(path, "rb");
    if (!f)
        return mg_fail(MG_ERR_IO, "check the path; the model directory must contain tokenizer.model",
                       "cannot open tokenizer %s: %s", path, std::strerror(errno));
    std::fclose(f);
    try {
        // Owned until it is handed out: sentencepiece throws on some malformed models (darts_clone's
        // "zero-length key", tests/fuzz/regress/spm/), and the catch below must not leak it.
        std::unique_ptr<mg_spm> spm(new mg_spm);
        spm->path = path;
        const auto st = spm->sp.Load(path);
        if (!st.ok())
            return mg_fail(MG_ERR_FORMAT, LOAD_HINT,
                           "%s is not a valid SentencePiece model (truncated, corrupted or another format); "
                           "sentencepiece says: %s",
                           path, st.ToString().c_str());
        if (spm->sp.GetPieceSize() <= 0)
            return mg_fail(MG_ERR_FORMAT, LOAD_HINT, "%s is a SentencePiece model with no pieces", path);
        *out = spm.release();
        return MG_OK;
    } catch (const std::bad_alloc &) {
        return mg_fail(MG_ERR_OOM, nullptr, "out of memory loading tokenizer %s", path);
    } catch (const std::exception &e) {
        return mg_fail(MG_ERR_FORMAT, LOAD_HINT, "%s is not a valid SentencePiece model: %s", path, e.what());
    }
}

extern "C" void mg_spm_free(mg_spm *spm) { delete spm; }

extern "C" int mg_spm_vocab_size(const mg_spm *spm) { return spm->sp.GetPieceSize(); }

extern "C" mg_status mg_spm_encode(const mg_spm *spm, const char *text, size_t len, int **ids, int *n) {
    *ids = nullptr;
    *n = 0;
    try {
        std::vector<int> v;
        const auto st = spm->sp.Encode(std::string(text, len), &v);
        if (!st.ok())
            return mg_fail(MG_ERR_ARG, "the text must be valid UTF-8", "tokenizer %s cannot encode the text: %s",
                           spm->path.c_str(), st.ToString().c_str());
        if (v.empty()) return MG_OK;
        int *buf = static_cast<int *>(std::malloc(v.size() * sizeof(int)));
        if (!buf) return mg_fail(MG_ERR_OOM, nullptr, "out of memory encoding %zu bytes of text", len);
        std::memcpy(buf, v.data(), v.size() * sizeof(int));
        *ids = buf;
        *n = static_cast<int>(v.size());
        return MG_OK;
    } catch (const std::bad_alloc &) {
        return mg_fail(MG_ERR_OOM, nullptr, "out of memory encoding %zu bytes of text", len);
    } catch (const std::exception &e) {
        return mg_fail(MG_ERR_ARG, nullptr, "tokenizer %s cannot encode the text: %s", spm->path.c_str(), e.what());
    }
}

extern "C" int mg_spm_is_special(const mg_spm *spm, int id) {
    return id >= 0 && id < spm->sp.GetPieceSize() && (spm->sp.IsControl(id) || spm->sp.IsUnknown(id));
}

extern "C" mg_status mg_spm_decode(const mg_spm *spm, const int *ids, int n, bool skip_special, char **text) {
    *text = nullptr;
    try {
        const int V = spm->sp.GetPieceSize();
        std::vector<int> keep;
        keep.reserve(n > 0 ? static_cast<size_t>(n) : 0);
        for (int i = 0; i < n; i++) {
            const bool in_vocab = ids[i] >= 0 && ids[i] < V;
            if (skip_special && (!in_vocab || mg_spm_is_special(spm, ids[i]))) continue;
            if (!in_vocab)
                return mg_fail(MG_ERR_ARG, "decode only ids produced by this tokenizer, or skip special tokens",
                               "token id %d at position %d is outside the vocabulary of %s (%d pieces)", ids[i], i,
                               spm->path.c_str(), V);
            keep.push_back(ids[i]);
        }
        std::string out;
        const auto st = spm->sp.Decode(keep, &out);
        if (!st.ok())
            return mg_fail(MG_ERR_ARG, nullptr, "tokenizer %s cannot decode the ids: %s", spm->path.c_str(),
                           st.ToString().c_str());
        char *buf = static_cast<char *>(std::malloc(out.size() + 1));
        if (!buf) return mg_fail(MG_ERR_OOM, nullptr, "out of memory decoding %d ids", n);
        std::memcpy(buf, out.c_str(), out.size() + 1);
        *text = buf;
        return MG_OK;
    } catch (const std::bad_alloc &) {
        return mg_fail(MG_ERR_OOM, nullptr, "out of memory decoding %d ids", n);
    } catch (const std::exception &e) {
        return mg_fail(MG_ERR_ARG, nullptr, "tokenizer %s cannot decode the ids: %s", spm->path.c_str(), e.what());
    }
}

extern "C" int mg_spm_piece_to_id(const mg_spm *spm, const char *piece) {
    const int id = spm->sp.PieceToId(piece);
    // PieceToId answers unk_id for any unknown piece; only the unknown piece itself maps there.
    if (id == spm->sp.unk_id() && spm->sp.IdToPiece(id) != piece) return -1;
    return id;
}

extern "C" const char *mg_spm_id_to_piece(const mg_spm *spm, int id) {
    if (id < 0 || id >= spm->sp.GetPieceSize()) return nullptr;
    return spm->sp.IdToPiece(id).c_str();
}
