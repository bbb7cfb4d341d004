/* `make install PREFIX=<temp>` then, outside the repository, a small program compiled with
 *   cc prog.c $(pkg-config --cflags --libs medgem)          (libmedgem.so.0 from the prefix)
 *   cc prog.c $(pkg-config --cflags --libs medgem-static)   (libmedgem.a: no libmedgem at run time)
 * classifies an image with the tiny model on the CPU, as `medgem classify --cpu` does; the
 * installed medgem runs; the soname links are in place; `make uninstall` removes every file. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test.h"

static const char *PROG =
    "#include <stdio.h>\n"
    "#include <stdlib.h>\n"
    "#include <string.h>\n"
    "#include <medgem.h>\n"
    "int main(int argc, char **argv) {\n"
    "    if (strcmp(medgem_version(), MEDGEM_VERSION)) return 3;\n"
    "    medgem_model_options o;\n"
    "    medgem_model_options_init(&o);\n"
    "    o.backend = MEDGEM_BACKEND_CPU;\n"
    "    medgem_model *m;\n"
    "    if (argc < 3 || medgem_model_open(argv[1], &o, &m) != MEDGEM_OK) { fprintf(stderr, \"%s\\n\", medgem_last_error()); return 1; }\n"
    "    int S = medgem_model_image_size(m);\n"
    "    float *px = malloc((size_t)3 * S * S * sizeof *px);\n"
    "    medgem_prediction p;\n"
    "    if (medgem_image_load(argv[2], S, px) || medgem_classify(m, px, 1, &p)) { fprintf(stderr, \"%s\\n\", medgem_last_error()); return 1; }\n"
    "    printf(\"label %d p %.6f\\n\", p.label, p.probs[p.label]);\n"
    "    free(px);\n"
    "    medgem_model_free(m);\n"
    "    return 0;\n"
    "}\n";

static int exists(const char *dir, const char *rel) {
    char p[2 * PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    struct stat st;
    return lstat(p, &st) == 0;
}

int main(void) {
    char repo[PATH_MAX], tmp[] = "/tmp/medgem_install_XXXXXX", prefix[PATH_MAX + 16], cmd[4 * PATH_MAX], *out = NULL;
    CHECK(getcwd(repo, sizeof repo) != NULL, "cwd");
    CHECK(mkdtemp(tmp) != NULL, "temp dir");
    snprintf(prefix, sizeof prefix, "%s/prefix", tmp);

    snprintf(cmd, sizeof cmd, "make -s install PREFIX=%s 2>&1", prefix);
    int rc = test_run(cmd, &out);
    CHECK(rc == 0, "make install (rc %d): %s", rc, out);
    free(out);
    const char *files[] = { "include/medgem.h", "lib/libmedgem.so.0.1.0", "lib/libmedgem.so.0", "lib/libmedgem.so",
                            "lib/libmedgem.a", "lib/medgem/libsentencepiece.so.0", "bin/medgem",
                            "lib/pkgconfig/medgem.pc", "lib/pkgconfig/medgem-static.pc" };
    const int n_files = (int)(sizeof files / sizeof *files);
    for (int i = 0; i < n_files; i++) CHECK(exists(prefix, files[i]), "installed %s", files[i]);
    snprintf(cmd, sizeof cmd, "readelf -d %s/lib/libmedgem.so.0.1.0 | grep -c 'SONAME.*libmedgem.so.0]'", prefix);
    CHECK(test_run(cmd, &out) == 0 && atoi(out) == 1, "soname libmedgem.so.0");
    free(out);

    /* a program outside the repository, through pkg-config */
    char prog[PATH_MAX + 16];
    snprintf(prog, sizeof prog, "%s/prog.c", tmp);
    FILE *f = fopen(prog, "w");
    CHECK(f && fputs(PROG, f) >= 0, "write prog.c");
    if (f) fclose(f);
    char ref_label[64] = "";
    snprintf(cmd, sizeof cmd,
             "build/medgem classify --cpu --json --model tests/golden/tiny --image tests/fixtures/classify/stripes_70x46.png 2>/dev/null");
    CHECK(test_run(cmd, &out) == 0, "the CLI's class");
    const char *pred = strstr(out, "\"pred\": ");
    snprintf(ref_label, sizeof ref_label, "label %d ", pred ? atoi(pred + 8) : -9);
    free(out);
    const char *pcs[2] = { "medgem", "medgem-static" };
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd,
                 "cd %s && cc -std=c11 -Wall -Wextra -o prog_%d prog.c $(PKG_CONFIG_PATH=%s/lib/pkgconfig pkg-config --cflags --libs %s) 2>&1",
                 tmp, k, prefix, pcs[k]);
        rc = test_run(cmd, &out);
        CHECK(rc == 0 && !out[0], "cc prog.c $(pkg-config --cflags --libs %s): rc %d, %s", pcs[k], rc, out);
        free(out);
        snprintf(cmd, sizeof cmd, "cd %s && ./prog_%d %s/tests/golden/tiny %s/tests/fixtures/classify/stripes_70x46.png 2>&1",
                 tmp, k, repo, repo);
        rc = test_run(cmd, &out);
        printf("%s %s: %s", rc == 0 && strstr(out, ref_label) ? "ok  " : "FAIL", pcs[k], out);
        CHECK(rc == 0 && strstr(out, ref_label), "%s program classifies as the CLI (%s)", pcs[k], ref_label);
        free(out);
        snprintf(cmd, sizeof cmd, "cd %s && ldd ./prog_%d | grep -c 'libmedgem.so.0 => %s/lib/libmedgem.so.0'", tmp, k, prefix);
        test_run(cmd, &out);
        CHECK(atoi(out) == (k == 0), "%s: libmedgem.so.0 from the prefix %s", pcs[k], k == 0 ? "at run time" : "not needed");
        free(out);
    }
    snprintf(cmd, sizeof cmd, "%s/bin/medgem version 2>&1", prefix);
    CHECK(test_run(cmd, &out) == 0 && strstr(out, "0.1.0"), "the installed medgem runs: %s", out);
    free(out);

    snprintf(cmd, sizeof cmd, "make -s uninstall PREFIX=%s 2>&1", prefix);
    rc = test_run(cmd, &out);
    CHECK(rc == 0, "make uninstall (rc %d): %s", rc, out);
    free(out);
    int left = 0;
    for (int i = 0; i < n_files; i++) left += exists(prefix, files[i]);
    CHECK(left == 0 && !exists(prefix, "lib/medgem"), "uninstall removed every file (%d left)", left);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
