/*
 * Runs srdd's C kernel (srdd/formats/csrc/fakequant.c, linked in) on jobs read from stdin, so that a build
 * for another CPU can be checked under an emulator against this machine's build: see test_native_arm64.py.
 *
 * A job is five little-endian fields -- int32 fmt, int32 dtype, int32 nthreads, int64 nblocks, int64
 * nbytes -- then nbytes of input. Its answer on stdout: int32 srdd_round_trip code, int32 srdd_stats code,
 * the nbytes of the round trip, then the statistics' SUMS doubles. The first answer is int32 srdd_simd().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SUMS 9 /* len(srdd.formats.stats.SUM_FIELDS); the test checks it */

int srdd_simd(void);
int srdd_round_trip(const void *x, void *y, int64_t nblocks, int fmt, int dtype, int nthreads, int existing);
int srdd_stats(const void *x, int64_t nblocks, int fmt, int dtype, int nthreads, double *out);

static void put(const void *p, size_t n) {
    if (fwrite(p, 1, n, stdout) != n) exit(3);
}

int main(void) {
    int32_t simd = srdd_simd();
    put(&simd, 4);
    for (;;) {
        int32_t head[3];
        int64_t sizes[2];
        if (fread(head, 4, 3, stdin) != 3) return feof(stdin) ? 0 : 2;
        if (fread(sizes, 8, 2, stdin) != 2) return 2;
        void *x = malloc(sizes[1] ? sizes[1] : 1), *y = malloc(sizes[1] ? sizes[1] : 1);
        if (!x || !y || fread(x, 1, sizes[1], stdin) != (size_t)sizes[1]) return 2;
        double sums[SUMS] = {0};
        int32_t rc[2] = {srdd_round_trip(x, y, sizes[0], head[0], head[1], head[2], 0),
                         srdd_stats(x, sizes[0], head[0], head[1], head[2], sums)};
        put(rc, sizeof rc);
        put(y, sizes[1]);
        put(sums, sizeof sums);
        free(x);
        free(y);
    }
}
