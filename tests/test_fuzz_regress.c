/* Replays every file under tests/fuzz/corpus/<name>/ and tests/fuzz/regress/<name>/ through the
 * fuzz targets' parsers (tests/fuzz/fuzz_targets.h) without libFuzzer, so the crashes `make fuzz`
 * found stay fixed. Each file runs in a forked child: a crash fails that file, not the suite (and,
 * under make test-asan or make test-valgrind, so does a leak).
 * Passes with no regress files at all. */
#include <dirent.h>
#include <sys/wait.h>

#include "tests/fuzz/fuzz_targets.h"
#include "tests/test.h"
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

typedef int (*fz_fn)(const uint8_t *, size_t);
static const struct {
    const char *name;
    fz_fn fn;
} targets[] = {
    { "json", fz_json }, { "safetensors", fz_safetensors }, { "config", fz_config }, { "lora", fz_lora },
    { "folds", fz_folds }, { "targz", fz_targz }, { "spm", fz_spm }, { "image", fz_image },
};

static int replay_file(fz_fn fn, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0, got;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 4096;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) break;
            buf = nb;
        }
        if ((got = fread(buf + n, 1, cap - n, f)) == 0) break;
        n += got;
    }
    fclose(f);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        fn(buf, n);
        free(buf);
#if defined(__SANITIZE_ADDRESS__)
        /* _exit skips LeakSanitizer's check at exit: run it here, so that make test-asan fails a leak
         * (tests/fuzz/regress/spm/); under make test-valgrind, valgrind checks the child at _exit */
        if (__lsan_do_recoverable_leak_check()) _exit(1);
#endif
        _exit(0);
    }
    free(buf);
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) return 0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Returns the number of files replayed under DIR (0 when DIR is absent). */
static int replay_dir(const char *kind, int t) {
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "tests/fuzz/%s/%s", kind, targets[t].name);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        CHECK(replay_file(targets[t].fn, path), "%s replays without a crash or sanitizer report", path);
        count++;
    }
    closedir(d);
    return count;
}

int main(void) {
    int corpus = 0, regress = 0;
    char tmp[128];
    fz_path("", tmp, sizeof tmp); /* the temp folder, made here so the forked replays share it and exit removes it */
    for (int t = 0; t < (int)(sizeof targets / sizeof targets[0]); t++) {
        int c = replay_dir("corpus", t);
        CHECK(c > 0, "tests/fuzz/corpus/%s holds seed inputs", targets[t].name);
        corpus += c;
        regress += replay_dir("regress", t);
    }
    printf("replayed %d corpus and %d regress inputs\n", corpus, regress);
    return test_finish();
}
