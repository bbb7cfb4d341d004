/* valgrind --leak-check=full on tests/valgrind/api_lifecycle (load / classify / train a step /
 * save / merge / free through engine/medgem.h on the CPU): no errors, nothing definitely,
 * indirectly or possibly lost. Skipped (one pass, with a note) when valgrind is not installed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test.h"

int main(void) {
    char *out = NULL;
    if (test_run("command -v valgrind", &out) != 0) {
        printf("note: valgrind is not installed (make deps installs it); skipped\n");
        free(out);
        CHECK(1, "skipped");
        return test_finish();
    }
    free(out);
    const int rc = test_run("OMP_NUM_THREADS=1 valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect,possible "
                            "--error-exitcode=9 build/valgrind/api_lifecycle 2>&1",
                            &out);
    const char *summary = strstr(out, "LEAK SUMMARY");
    printf("%s", summary ? summary : out);
    CHECK(rc == 0, "valgrind: no errors and no leaks (rc %d)", rc);
    CHECK(strstr(out, "definitely lost: 0 bytes") || strstr(out, "All heap blocks were freed"), "nothing definitely lost");
    free(out);
    system("rm -rf build/valgrind/adapter");
    return test_finish();
}
