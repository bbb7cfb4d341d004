/* PEFT LoRA adapters on the host (spec/model.md §8.1): per adapted nn.Linear of the model, lora_A
 * (r, in) and lora_B (out, r) in fp32 and the scaling, so that the layer computes
 *   y = x·Wᵀ (+ b) + scale · (x·Aᵀ)·Bᵀ,   scale = alpha / r   (alpha / sqrt(r) with use_rslora).
 * Adapted modules are the model's Linears only: text q/k/v/o_proj, gate/up/down_proj; vision
 * q/k/v/out_proj, fc1, fc2 ("all-linear" in PEFT; not lm_head, not the projector).
 *
 * Files (PEFT save_pretrained): DIR/adapter_config.json and DIR/adapter_model.safetensors with keys
 * base_model.model.<module path>.lora_{A,B}.weight. The module path is the in-memory name, which
 * depends on the transformers version: model.language_model.layers.N.self_attn.q_proj (4.57 and
 * 5.x), model.vision_tower.vision_model.encoder.layers.N... (4.57) or
 * model.vision_tower.encoder.layers.N... (5.x). Both are read; the 5.x spelling is written.
 *
 * The module table is what training will reuse: A and B of every module live in one fp32 block
 * (`params`), so an optimizer can treat them as one flat vector of leaves. */
#ifndef MG_LORA_H
#define MG_LORA_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/config.h"
#include "model/medgem_model.h"
#include "model/weights.h"

typedef enum {
    MG_LORA_Q,    /* self_attn.q_proj */
    MG_LORA_K,    /* self_attn.k_proj */
    MG_LORA_V,    /* self_attn.v_proj */
    MG_LORA_O,    /* self_attn.o_proj (text) or self_attn.out_proj (vision) */
    MG_LORA_GATE, /* mlp.gate_proj (text) */
    MG_LORA_UP,   /* mlp.up_proj (text) */
    MG_LORA_DOWN, /* mlp.down_proj (text) */
    MG_LORA_FC1,  /* mlp.fc1 (vision) */
    MG_LORA_FC2,  /* mlp.fc2 (vision) */
    MG_LORA_N_KINDS
} mg_lora_kind;

typedef struct {
    mg_component comp; /* MG_COMP_TEXT or MG_COMP_VISION */
    int layer;         /* 0..L-1 or 0..Lv-1 */
    mg_lora_kind kind;
    int r;             /* rank of this module (rank_pattern or r) */
    int in, out;       /* the base Linear's in and out features */
    double alpha;      /* lora_alpha of this module (alpha_pattern or lora_alpha) */
    float scale;       /* alpha / r, or alpha / sqrt(r) with use_rslora (PEFT's `scaling`) */
    float *A;          /* (r, in)  lora_A.weight, points into params */
    float *B;          /* (out, r) lora_B.weight, points into params */
} mg_lora_module;

typedef struct {
    int r;                  /* the config's r */
    double alpha;           /* the config's lora_alpha */
    bool use_rslora;
    double dropout;         /* lora_dropout (training only; kept to write it back) */
    char base_model[MG_PATH_MAX]; /* base_model_name_or_path, "" when unknown */
    mg_lora_module *mods;   /* [n], text layers first then vision, each layer in mg_lora_kind order */
    int n;
    float *params;          /* (n_params) every module's A then B, in mods order */
    int64_t n_params;
} mg_lora;

/* "self_attn.q_proj", "mlp.fc1", ...; NULL when comp has no such Linear (e.g. a text fc1). */
const char *mg_lora_module_name(mg_component comp, mg_lora_kind kind);
/* The base Linear's weight shape (out, in) under cfg; 0 when comp has no such Linear. */
int mg_lora_linear_shape(const mg_config *cfg, mg_component comp, mg_lora_kind kind, int *out, int *in);

/* Reads DIR/adapter_config.json and DIR/adapter_model.safetensors and checks them against cfg:
 * every key names a Linear of the model selected by target_modules (minus exclude_modules), A and
 * B are both present with shapes (r, in) and (out, r), r and alpha from rank_pattern/alpha_pattern
 * when they match. F32 is expected; BF16/F16 tensors are widened to fp32. Features that change the
 * math (use_dora, lora_bias, bias != "none", modules_to_save, non-LORA peft_type, ...) are
 * rejected naming the key. Missing, duplicated, unexpected and wrong-shaped tensors are listed in
 * one error. */
mg_status mg_lora_load(const char *dir, const mg_config *cfg, mg_lora *lora);

/* Writes DIR/adapter_model.safetensors (F32, transformers 5.x PEFT key names) and
 * DIR/adapter_config.json (peft_type LORA, task_type CAUSAL_LM, bias none, r, lora_alpha,
 * lora_dropout, use_rslora, base_model_name_or_path, rank/alpha_pattern for the modules whose r or
 * alpha differ), each atomically (temp file, fsync, rename). DIR must exist. target_modules is the
 * sorted list of leaf names ("q_proj", "fc1", ...) when those select exactly the adapted modules
 * of the model cfg describes (as PEFT writes for "all-linear"), else the full module paths. */
mg_status mg_lora_save(const char *dir, const mg_lora *lora, const mg_config *cfg);

/* A deep copy (its own module table and parameter block). */
mg_status mg_lora_copy(mg_lora *dst, const mg_lora *src);
void mg_lora_free(mg_lora *lora);

/* Which Linears an adapter covers: on[comp][kind] for MG_COMP_TEXT and MG_COMP_VISION. */
typedef struct {
    bool on[2][MG_LORA_N_KINDS];
} mg_lora_targets;

/* "all-linear" (PEFT's: every Linear of both towers, not the head or the projector), "text",
 * "vision", or a comma list of leaf names (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj,
 * down_proj, out_proj, fc1, fc2; q/k/v_proj select both towers, as PEFT's suffix match does). */
mg_status mg_lora_parse_targets(const char *spec, mg_lora_targets *t);

/* A fresh adapter with PEFT's init (init_lora_weights=True): A ~ U(-1/sqrt(in), 1/sqrt(in))
 * (kaiming_uniform_ with a = sqrt(5)) drawn from a seeded counter-based stream, B = 0; scale
 * alpha / r. Modules in mg_lora order. */
mg_status mg_lora_create(mg_lora *lora, const mg_config *cfg, const mg_lora_targets *t, int r, double alpha,
                         double dropout, uint64_t seed);

/* w (out, in), one module's base weight in host fp32:  w += (B·A)·scale, in PEFT's order of
 * operations (get_delta_weight then the add): each row of B·A summed over k ascending in fp32,
 * then scaled, then added in fp32. The one delta computation behind both merges: into a loaded
 * model (mg_model_merge_lora) and into checkpoint files (engine/jobs/merge.h). Rows are spread
 * over OpenMP threads; the result does not depend on their number. */
void mg_lora_add_delta(const mg_lora_module *mod, float *w);

/* Merges the adapter into the model's weights like PEFT merge_and_unload (safe_merge=False):
 *   W ← W + (B·A)·scale
 * with B·A and the scaling computed in fp32 on the host, added in fp32 and stored in the backend's
 * dtype: exact fp32 on the CPU backend; on a bf16 backend the sum is rounded once to bf16, as
 * PEFT's in-place `weight.data += delta` does on a bf16 weight. Knows the model's layout (the fused
 * gate|up weight). Merging twice adds the delta twice. */
mg_status mg_model_merge_lora(mg_model *m, const mg_lora *lora);
/* Loads the PEFT adapter in dir, merges it into m and frees it: what `--adapter DIR` does. */
mg_status mg_model_apply_adapter(mg_model *m, const char *dir);

#endif
