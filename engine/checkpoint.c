/* A Hugging Face checkpoint directory: DIR/model.safetensors, or the shards that
 * DIR/model.safetensors.index.json lists in its weight_map (tensor name -> shard file name). Each
 * shard is opened once, and every tensor the index names must be in the shard it points to. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/json.h"
#include "engine/safetensors.h"

#define HINT_DOWNLOAD "download the whole model directory, e.g. `hf download google/medgemma-4b-it --local-dir DIR`"

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Opens each distinct shard of the weight map once, in first-mention order. */
static mg_status open_shards(const char *dir, const char *index_path, const mg_json *map, mg_checkpoint *ck) {
    const char **names = calloc((size_t)map->n, sizeof *names);
    ck->files = calloc((size_t)map->n, sizeof *ck->files);
    if (!names || !ck->files) { free(names); return mg_fail(MG_ERR_OOM, NULL, "out of memory"); }
    mg_status s = MG_OK;
    for (int i = 0; i < map->n && s == MG_OK; i++) {
        const mg_json *v = &map->items[i];
        if (v->type != MG_JSON_STRING || !v->len || strchr(v->string, '/')) {
            s = mg_fail(MG_ERR_FORMAT, HINT_DOWNLOAD, "%s: weight_map['%s'] must be a shard file name in %s",
                        index_path, v->key, dir);
            break;
        }
        int seen = 0;
        for (int k = 0; k < ck->n_files && !seen; k++) seen = !strcmp(names[k], v->string);
        if (seen) continue;
        char *path = join(dir, v->string);
        if (!path) { s = mg_fail(MG_ERR_OOM, NULL, "out of memory"); break; }
        s = mg_st_open(path, &ck->files[ck->n_files]);
        if (s != MG_OK) {
            if (s == MG_ERR_MISSING)
                mg_fail(s, HINT_DOWNLOAD, "%s lists shard %s, which is missing (no file %s)", index_path, v->string,
                        path);
            else
                mg_fail_context(s, "%s lists shard %s: ", index_path, v->string);
        } else {
            names[ck->n_files++] = v->string;
        }
        free(path);
    }
    free(names);
    return s;
}

/* Every tensor the index names must sit in the shard it is mapped to. */
static mg_status check_index(const char *index_path, const mg_json *map, const mg_checkpoint *ck) {
    for (int i = 0; i < map->n; i++) {
        const mg_json *v = &map->items[i];
        const mg_st_file *f = NULL;
        for (int k = 0; k < ck->n_files && !f; k++) {
            const char *base = strrchr(ck->files[k].path, '/');
            if (!strcmp(base ? base + 1 : ck->files[k].path, v->string)) f = &ck->files[k];
        }
        if (!f || !mg_st_find(f, v->key))
            return mg_fail(MG_ERR_MISSING, HINT_DOWNLOAD, "%s maps tensor '%s' to %s, but that shard does not hold it",
                           index_path, v->key, v->string);
    }
    return MG_OK;
}

mg_status mg_checkpoint_open(const char *dir, mg_checkpoint *ck) {
    memset(ck, 0, sizeof *ck);
    char *index_path = join(dir, "model.safetensors.index.json");
    char *single_path = join(dir, "model.safetensors");
    mg_status s = MG_OK;
    if (!index_path || !single_path) {
        s = mg_fail(MG_ERR_OOM, NULL, "out of memory");
    } else if (access(index_path, F_OK) == 0) {
        mg_json *idx = NULL;
        s = mg_json_parse_file(index_path, &idx);
        const mg_json *map = s == MG_OK ? mg_json_get(idx, "weight_map") : NULL;
        if (s == MG_OK && (!map || map->type != MG_JSON_OBJECT || map->n == 0))
            s = mg_fail(MG_ERR_FORMAT, HINT_DOWNLOAD, "%s has no non-empty \"weight_map\" object", index_path);
        if (s == MG_OK) s = open_shards(dir, index_path, map, ck);
        if (s == MG_OK) s = check_index(index_path, map, ck);
        mg_json_free(idx);
    } else if (access(single_path, F_OK) == 0) {
        ck->files = calloc(1, sizeof *ck->files);
        s = ck->files ? mg_st_open(single_path, &ck->files[0]) : mg_fail(MG_ERR_OOM, NULL, "out of memory");
        if (s == MG_OK) ck->n_files = 1;
    } else {
        s = mg_fail(MG_ERR_MISSING, HINT_DOWNLOAD,
                    "%s has neither model.safetensors nor model.safetensors.index.json", dir);
    }
    free(index_path);
    free(single_path);
    if (s != MG_OK) mg_checkpoint_close(ck);
    return s;
}

void mg_checkpoint_close(mg_checkpoint *ck) {
    for (int i = 0; i < ck->n_files; i++) mg_st_close(&ck->files[i]);
    free(ck->files);
    memset(ck, 0, sizeof *ck);
}
